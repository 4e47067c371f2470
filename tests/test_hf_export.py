"""`noisecraft export RUN OUT --format diffusers` / `nc.export_diffusers`: diffusers' own classes load the folder
and their scheduler loops sample what noisecraft samples from the same x_T on the same times.

Tiny UNets (8x8 digits, two levels); the default preset's run is trained for two steps, the other
parameterizations are runs built in memory with their initial weights (every comparison holds for any weights).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.cli import app
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.schedules import DiscreteVP
from noisecraft.hf.export import export_diffusers, shift_time_embedding
from noisecraft.runs.config import config_from_dict, preset_config
from noisecraft.runs.pipeline import Pipeline
from noisecraft.runs.train import train

diffusers = pytest.importorskip("diffusers")
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY = {"block_channels": [8, 16], "attention": [False, False], "layers_per_block": 1}
SHAPE = (1, 8, 8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _in_memory(preset: str, data: str = "digits", shape: tuple[int, ...] = SHAPE, loss: dict | None = None,
               **model) -> Pipeline:
    """A run of `preset` built in memory with its initial weights (seed 0)."""
    raw = preset_config(data, preset, max_steps=2).model_dump(mode="json")
    raw["model"].update(TINY, **model)
    raw["loss"].update(loss or {})
    config = config_from_dict(raw)
    torch.manual_seed(0)
    net = config.model.build(shape, config.loss.time_input).eval()
    return Pipeline(config, net, shape, len(shape) == 3)


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory) -> Path:
    """The default preset's run (`noisecraft train` with no options: digits, edm), trained for two steps."""
    raw = preset_config(max_steps=2, batch_size=16, checkpoint_every=2).model_dump(mode="json")
    assert raw["loss"]["parameterization"] == "edm"
    raw["model"].update(TINY)
    path = tmp_path_factory.mktemp("export") / "run"
    train(config_from_dict(raw), path, progress=False)
    return path


def _loop(scheduler, unet, x: torch.Tensor, factor: float = 1.0, scaled: bool = False, labels=None,
          **step) -> torch.Tensor:
    """diffusers' sampling loop: the scheduler's timesteps, times `factor`, into the UNet."""
    with torch.no_grad():
        x = x.detach()
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t) if scaled else x
            out = unet(x_in, factor * t, class_labels=labels).sample
            x = scheduler.step(out, t, x, **step).prev_sample
    return x


def _edm_times(pipe: Pipeline, scheduler) -> torch.Tensor:
    """noisecraft times of an EDM scheduler's sigmas (its float32 sigmas, the last 0 left to the final step)."""
    return pipe.schedule.t_from_sigma_tilde(scheduler.sigmas[:-1].double()).clamp(0.0, 1.0)


# -- the default preset: EDM ---------------------------------------------------------------------------------
def test_default_run_exports_and_diffusers_samples_it(edm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["export", str(edm_run), str(out), "--format", "diffusers"])
    assert res.exit_code == 0, res.output
    assert "250 * t" in res.output and "EDMDPMSolverMultistepScheduler" in res.output
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (out / "model_index.json").exists()  # no diffusers pipeline feeds the UNet 250 c_noise
    manifest = json.loads((out / "noisecraft.json").read_text())
    assert manifest["unet_time_scale"] == 250.0 and manifest["run"]["parameterization"] == "edm"
    assert not list(tmp_path.glob(".out.*"))  # the temporary folder was renamed, nothing left beside OUT

    pipe = nc.load_run(edm_run)
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet")
    run_weights = pipe.net.model.state_dict()
    assert all(torch.equal(w, run_weights[k]) for k, w in unet.state_dict().items())  # the EMA weights, unchanged

    for cls, solver in ((diffusers.EDMEulerScheduler, "ddim"), (diffusers.EDMDPMSolverMultistepScheduler, "dpm++2m")):
        scheduler = cls.from_pretrained(out / "scheduler")
        scheduler.set_timesteps(8)
        times = _edm_times(pipe, scheduler)
        x_T = torch.randn(4, *SHAPE, generator=_gen()) * scheduler.sigmas[0]
        ours, info = nc.solve(pipe.network, pipe.schedule, x_T, times, solver=solver)
        theirs = _loop(scheduler, unet, x_T.clone(), manifest["unet_time_scale"], scaled=True)
        assert info.nfe == len(scheduler.timesteps)
        assert (ours - theirs).abs().max() < 1e-5, cls.__name__
        scheduler.set_timesteps(8)
        unscaled = _loop(scheduler, unet, x_T.clone(), 1.0, scaled=True)  # diffusers' own c_noise: another model
        assert (ours - unscaled).abs().max() > 1e-3


def test_class_labels_carry_over(tmp_path: Path) -> None:
    pipe = _in_memory("edm", num_classes=10, label_dropout=0.2)
    result = export_diffusers(pipe, tmp_path / "out")
    assert result.plan.pipeline_class is None and not (tmp_path / "out" / "model_index.json").exists()
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "out" / "unet")
    assert unet.config.num_class_embeds == 11  # ten classes and the null label of classifier-free guidance
    assert json.loads((tmp_path / "out" / "noisecraft.json").read_text())["null_label"] == 10
    scheduler = diffusers.EDMEulerScheduler.from_pretrained(tmp_path / "out" / "scheduler")
    scheduler.set_timesteps(5)
    labels = torch.tensor([3, 7, 10])
    x_T = torch.randn(3, *SHAPE, generator=_gen(1)) * scheduler.sigmas[0]
    ours, _ = nc.solve(pipe.network, pipe.schedule, x_T, _edm_times(pipe, scheduler), solver="ddim", cond=labels)
    theirs = _loop(scheduler, unet, x_T.clone(), result.plan.unet_time_scale, scaled=True, labels=labels)
    assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize(("schedule", "time_input", "factor"), [("ve", "c_noise", 250.0), ("edm", "log_snr", -200.0)])
def test_edm_variants_map_too(schedule: str, time_input: str, factor: float, tmp_path: Path) -> None:
    """VE sigmas are diffusers' "exponential" EDM grid; a log-SNR input is -8 c_noise (times its scale 25)."""
    pipe = _in_memory("edm", loss={"schedule": {"name": schedule}, "time_input": time_input})
    result = export_diffusers(pipe, tmp_path / "out")
    assert result.plan.unet_time_scale == factor
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "out" / "unet")
    scheduler = diffusers.EDMEulerScheduler.from_pretrained(tmp_path / "out" / "scheduler")
    assert scheduler.config.sigma_schedule == ("exponential" if schedule == "ve" else "karras")
    scheduler.set_timesteps(6)
    x_T = torch.randn(3, *SHAPE, generator=_gen(2)) * scheduler.sigmas[0]
    ours, _ = nc.solve(pipe.network, pipe.schedule, x_T, _edm_times(pipe, scheduler), solver="ddim")
    assert (ours - _loop(scheduler, unet, x_T.clone(), factor, scaled=True)).abs().max() < 1e-5


# -- VP tables and flow ---------------------------------------------------------------------------------------
VP_RUNS = {
    "ddpm": {"preset": "ddpm"},  # DiscreteVP, eps, t fed as 1000 t = n + 1: the offset folded into the weights
    "v": {"preset": "v"},  # VPCosine, v: written as its table, capped at the last node
    "x0": {"preset": "v", "loss": {"schedule": {"name": "vp_linear"}, "parameterization": "x0"}},
}


@pytest.mark.parametrize("name", list(VP_RUNS))
def test_vp_runs_sample_the_same_under_diffusers(name: str, tmp_path: Path) -> None:
    """The folder's table is the run's schedule at t_n = (n + 1)/N to diffusers' float32 rounding; on that table,
    the run's network and diffusers' loop draw the same. In float64: an untrained eps network's x0_hat is ~80
    times its output at the first step, which would magnify float32 round-off."""
    spec = VP_RUNS[name]
    pipe = _in_memory(spec["preset"], loss=spec.get("loss"))
    out = tmp_path / "out"
    result = export_diffusers(pipe, out)
    assert result.plan.unet_time_scale == 1.0 and result.plan.time_shift == 1.0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet", torch_dtype=torch.float64)
    ddim = diffusers.DDIMScheduler.from_pretrained(out / "scheduler")  # the folder's table, clip and prediction type

    n_train = ddim.config.num_train_timesteps
    held = ddim.alphas_cumprod.double()  # diffusers' float32 table
    exact = pipe.schedule.alpha((torch.arange(n_train, dtype=torch.float64) + 1.0) / n_train) ** 2
    assert ((held - exact) / exact)[:-1].abs().max() < 1e-6  # VPCosine's last node, alpha(1) = 0, is capped
    table = DiscreteVP(betas=(1.0 - held / torch.cat([held.new_ones(1), held[:-1]])).tolist())
    run = pipe.network
    denoise = Denoiser(run.fn, table, run.parameterization, run.time_input)  # the run's network on that table
    pipe.net.double()

    ddim.set_timesteps(10)
    times = table.t_of_timestep(ddim.timesteps.double())
    x_T = torch.randn(4, *SHAPE, generator=_gen(), dtype=torch.float64) * float(table.sigma(times[0]))
    ours, _ = nc.solve(denoise, table, x_T, times, solver="ddim", clip=pipe.config.sample.clip)
    theirs = _loop(ddim, unet, x_T.clone(), use_clipped_model_output=True)
    assert (ours - theirs).abs().max() < 1e-5
    on_run, _ = nc.solve(run, pipe.schedule, x_T, times, solver="ddim", clip=pipe.config.sample.clip)
    assert (on_run - theirs).abs().max() < 1e-3  # and on the run's own float64 schedule, to the table's rounding

    dpm = diffusers.DPMSolverMultistepScheduler.from_pretrained(out / "scheduler", solver_type="heun")
    dpm.set_timesteps(8)  # unclipped (DPM-Solver has no static clip): compared relative to the samples' size
    times = table.t_of_timestep(dpm.timesteps.double())
    x_T = torch.randn(4, *SHAPE, generator=_gen(1), dtype=torch.float64) * float(table.sigma(times[0]))
    ours, _ = nc.solve(denoise, table, x_T, times, solver="dpm++2m")
    size = max(1.0, float(ours.abs().max()))
    assert (ours - _loop(dpm, unet, x_T.clone())).abs().max() < 1e-5 * size

    dpm.set_timesteps(8)  # the run's own weights read timestep n as level n, not n + 1: visibly another model
    assert (ours - _loop(dpm, pipe.net.model, x_T.clone())).abs().max() > 1e-3 * size


def test_time_offset_folds_into_the_embedding_exactly() -> None:
    """UNet2DModel at timestep n after the rotation equals the UNet before at n + delta, for fractional delta."""
    model = _in_memory("ddpm").net.model.double()
    shifted = diffusers.UNet2DModel.from_config(model.config).double()
    shifted.load_state_dict(model.state_dict())
    shift_time_embedding(shifted, 0.37)
    x = torch.randn(3, *SHAPE, generator=_gen(), dtype=torch.float64)
    n = torch.tensor([0.0, 123.0, 998.0], dtype=torch.float64)
    with torch.no_grad():
        before, after = model(x, n + 0.37).sample, shifted(x, n).sample
        assert (before - after).abs().max() < 1e-5
        assert (model(x, n).sample - after).abs().max() > 1e-3


def test_ddpm_pipeline_loads_the_folder(tmp_path: Path) -> None:
    """`DDPMPipeline.from_pretrained(OUT)`: a DDPM run, and a rectified-flow run on FlowMatchEulerDiscreteScheduler."""
    for preset in ("ddpm", "flow"):
        export_diffusers(_in_memory(preset), tmp_path / preset)
        ddpm = diffusers.DDPMPipeline.from_pretrained(tmp_path / preset)
        ddpm.set_progress_bar_config(disable=True)
        images = ddpm(batch_size=2, num_inference_steps=3, generator=_gen(), output_type="pt").images
        assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_flow_run_samples_the_same_under_diffusers(tmp_path: Path) -> None:
    pipe = _in_memory("flow")
    export_diffusers(pipe, tmp_path / "out")
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "out" / "unet")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path / "out" / "scheduler")
    sigmas = [0.999, 0.8, 0.55, 0.3, 0.1, 0.02]  # diffusers' sigma is the flow's t
    scheduler.set_timesteps(sigmas=sigmas)
    times = torch.tensor(sigmas, dtype=torch.float64)
    x_T = torch.randn(4, *SHAPE, generator=_gen()) * sigmas[0]
    ours, _ = nc.solve(pipe.network, pipe.schedule, x_T, times, solver="ddim")  # Euler in t on a straight path
    assert (ours - _loop(scheduler, unet, x_T.clone())).abs().max() < 1e-5


# -- back through nc.from_diffusers ---------------------------------------------------------------------------
def test_export_then_from_diffusers_gives_the_weights_and_the_model(tmp_path: Path) -> None:
    from_diffusers = getattr(nc, "from_diffusers", None)
    if from_diffusers is None:
        pytest.skip("nc.from_diffusers is not there yet")
    pipe = _in_memory("ddpm")
    export_diffusers(pipe, tmp_path / "out")
    loaded = from_diffusers(tmp_path / "out")
    folder = load_file(tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors")
    state = loaded.net.unet.model.state_dict()
    assert folder.keys() == state.keys() and all(torch.equal(state[k], w) for k, w in folder.items())
    run = pipe.net.model.state_dict()  # the run's own: all but the rotated first time-embedding layer
    assert all(torch.equal(run[k], w) for k, w in folder.items() if k != "time_embedding.linear_1.weight")
    x = torch.randn(4, *SHAPE, generator=_gen())
    t = (torch.tensor([999, 500, 20, 0], dtype=torch.float64) + 1.0) / 1000
    with torch.no_grad():
        assert (loaded.network.raw(x, t) - pipe.network.raw(x, t)).abs().max() < 1e-5  # the same eps network
    again = export_diffusers(loaded, tmp_path / "again")  # a loaded folder feeds the timestep itself: no offset
    assert again.plan.time_shift == 0.0 and again.plan.pipeline_class == "DDPMPipeline"
    twice = load_file(tmp_path / "again" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(twice[k], w) for k, w in folder.items())


def test_default_run_back_through_from_diffusers(edm_run: Path, tmp_path: Path) -> None:
    export_diffusers(edm_run, tmp_path / "out")
    loaded, pipe = nc.from_diffusers(tmp_path / "out"), nc.load_run(edm_run)
    x, t = torch.randn(4, *SHAPE, generator=_gen()), torch.tensor([1.0, 0.6, 0.3, 0.0], dtype=torch.float64)
    with torch.no_grad():
        assert (loaded.network(x, t) - pipe.network(x, t)).abs().max() < 1e-5


def test_flow_run_back_through_from_diffusers(tmp_path: Path) -> None:
    """FlowMatchEulerDiscreteScheduler folders load as the flow: the UNet sees t N as diffusers passes it."""
    pipe = _in_memory("flow")
    export_diffusers(pipe, tmp_path / "out")
    loaded = nc.from_diffusers(tmp_path / "out")
    assert loaded.config.loss.parameterization == "flow" and loaded.schedule == pipe.schedule
    x, t = torch.randn(4, *SHAPE, generator=_gen()), torch.tensor([0.999, 0.6, 0.3, 0.01], dtype=torch.float64)
    with torch.no_grad():
        out, ref = loaded.network(x, t), pipe.network(x, t)
    assert (out - ref).abs().max() < 1e-5 and ref.abs().max() > 1e-2  # a real comparison, not two zeros


# -- errors --------------------------------------------------------------------------------------------------
NO_COUNTERPART = {
    "score": ({"preset": "score"}, r"parameterization 'score' on schedule VE has no diffusers counterpart"),
    "sub_vp": ({"preset": "ddpm", "loss": {"schedule": {"name": "sub_vp"}, "time_distribution": "uniform"}},
               r"parameterization 'eps' on schedule SubVP has no diffusers counterpart"),
    "mlp": ({"preset": "edm", "data": "moons", "shape": (2,)}, r"network is MLP .* UNet2DModel, for image runs only"),
    "text": ({"preset": "edm", "num_classes": 10, "cond": "text", "text_dim": 12}, r"text-conditioned"),
    "edm_t": ({"preset": "edm", "loss": {"time_input": "t"}}, r"time_input 't' .* no diffusers counterpart"),
}


@pytest.mark.parametrize("name", list(NO_COUNTERPART))
def test_no_counterpart_is_one_line_naming_it(name: str, tmp_path: Path) -> None:
    spec, message = NO_COUNTERPART[name]
    pipe = _in_memory(**spec)
    with pytest.raises(ValueError, match=message) as err:
        export_diffusers(pipe, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary folder left


def test_an_existing_out_is_refused_unless_forced(edm_run: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["export", str(edm_run), str(taken)])
    assert res.exit_code == 2 and f"OUT {str(taken)!r} exists and is not empty" in res.output and "--force" in res.output
    res = runner.invoke(app, ["export", str(edm_run), str(taken), "--force"])  # not an earlier export: kept
    assert res.exit_code == 2 and "holds no noisecraft.json" in res.output
    assert (taken / "keep.txt").read_text() == "mine"

    out = tmp_path / "out"
    assert runner.invoke(app, ["export", str(edm_run), str(out)]).exit_code == 0
    (out / "stale.txt").write_text("old")
    assert runner.invoke(app, ["export", str(edm_run), str(out)]).exit_code == 2
    res = runner.invoke(app, ["export", str(edm_run), str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert not (out / "stale.txt").exists() and (out / "unet" / "config.json").is_file()

    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["export", str(edm_run), str(tmp_path / "file")])
    assert res.exit_code == 2 and "is a file" in res.output
    res = runner.invoke(app, ["export", str(edm_run), str(tmp_path / "new"), "--format", "onnx"])
    assert res.exit_code == 2 and "unknown --format 'onnx'" in res.output and not (tmp_path / "new").exists()


# -- docs ----------------------------------------------------------------------------------------------------
def test_docs_five_lines_sample_the_default_run(edm_run: Path, tmp_path: Path, monkeypatch) -> None:
    """The diffusers code of docs/hf.md, "Exporting a run", runs as written on an export of the default run and
    draws what noisecraft draws from the same x_T on the same sigmas."""
    text = (ROOT / "docs" / "hf.md").read_text()
    section = text[text.index("## Exporting a run"):]
    shell, code = (re.search(rf"```{lang}\n(.*?)```", section, flags=re.DOTALL)[1] for lang in ("bash", "python"))
    out = re.search(r"noisecraft export \S+ (\S+)", shell)[1]
    export_diffusers(edm_run, tmp_path / out)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/hf.md", "exec"), namespace)  # noqa: S102 - our own docs
    x, scheduler = namespace["x"], namespace["scheduler"]
    pipe = nc.load_run(edm_run)
    n = x.shape[0]
    x_T = torch.randn(n, *SHAPE, generator=_gen()) * scheduler.sigmas[0]  # the draw the docs make
    ours, _ = nc.solve(pipe.network, pipe.schedule, x_T, _edm_times(pipe, scheduler), solver="dpm++2m")
    assert (ours - x).abs().max() < 1e-5

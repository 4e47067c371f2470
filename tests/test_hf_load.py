"""`nc.from_diffusers`: diffusers folders and objects as a Pipeline, the scheduler-config mapping against
diffusers' own tables and timesteps, the CLI's hf:PATH, and errors naming the file and what was expected."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.core.schedules import ZERO_SNR_ALPHA2, DiscreteVP
from noisecraft.hf import schedulers as hs
from noisecraft.hf.load import DiffusersUNet, from_diffusers
from noisecraft.solvers import SOLVERS

diffusers = pytest.importorskip("diffusers")


def tiny_unet(classes: int | None = None, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 norm_num_groups=4, layers_per_block=1, num_class_embeds=classes,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), **kw).eval()


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddpm")
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler()).save_pretrained(path)
    return path


def table(schedule: DiscreteVP) -> torch.Tensor:
    """alpha_bar at every DDPM timestep, as the schedule gives it."""
    return schedule.alpha(schedule.t_of_timestep(torch.arange(schedule.N))) ** 2


# -- the scheduler config: schedules --------------------------------------------------------------
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("betas", [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"trained_betas": np.linspace(1e-4, 0.03, 50).tolist(), "num_train_timesteps": 50},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
], ids=["linear", "scaled_linear", "cosine", "trained", "zero_snr"])
def test_schedule_is_diffusers_table(cls, betas):
    """The schedule's alpha^2 at each timestep is the scheduler's own (float32) alphas_cumprod, exactly; at a zero
    terminal SNR the end is finite: 2^-24 in the sigma-space DPM-Solver, as diffusers, and below float32
    resolution (lambda finite) where diffusers keeps 0."""
    scheduler = getattr(diffusers, cls)(**betas)
    schedule = hs.schedule_from_config(dict(scheduler.config, _class_name=cls))
    ours, theirs = table(schedule), scheduler.alphas_cumprod.to(torch.float64)
    if betas.get("rescale_betas_zero_snr") and cls != "DPMSolverMultistepScheduler":
        assert theirs[-1] == 0 and float(ours[-1]) == pytest.approx(ZERO_SNR_ALPHA2, rel=1e-9)
        ours, theirs = ours[:-1], theirs[:-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    lam = schedule.log_snr(torch.linspace(0, 1, 1001, dtype=torch.float64))
    assert torch.isfinite(lam).all() and (lam[1:] < lam[:-1]).all()


def test_sigmoid_betas_match_ddpm_scheduler():
    scheduler = diffusers.DDPMScheduler(beta_schedule="sigmoid")
    torch.testing.assert_close(table(hs.schedule_from_config(dict(scheduler.config, _class_name="DDPMScheduler"))),
                               scheduler.alphas_cumprod.to(torch.float64), rtol=1e-12, atol=0)


def test_zero_snr_floor_that_would_rise_is_refused_with_a_warning():
    """Linear betas rescaled to zero SNR end below 2^-24: diffusers' DPM floor would make lambda rise again."""
    config = dict(diffusers.DPMSolverMultistepScheduler(rescale_betas_zero_snr=True).config,
                  _class_name="DPMSolverMultistepScheduler")
    with pytest.warns(UserWarning, match="2\\^-24 above"):
        schedule = hs.schedule_from_config(config)
    assert schedule.zero_terminal_snr and float(schedule.sigma(1.0)) == pytest.approx(1.0)


def test_edm_scheduler_maps_to_edm_schedule_and_preconditioning():
    spec = hs.read_scheduler({"_class_name": "EDMEulerScheduler", "sigma_min": 0.01, "sigma_max": 50.0,
                              "sigma_data": 0.7, "rho": 5.0, "prediction_type": "v_prediction"})
    assert spec.schedule == nc.schedules.EDM(sigma_min=0.01, sigma_max=50.0, rho=5.0, sigma_data=0.7)
    assert (spec.parameterization, spec.time_input, spec.output_sign, spec.sigma_data) == ("edm", "c_noise", -1.0, 0.7)


@pytest.mark.parametrize("config, bounds", [
    ({"_class_name": "DDIMScheduler"}, (1.0, None)),
    ({"_class_name": "DDIMScheduler", "clip_sample_range": 2.0}, (2.0, None)),
    ({"_class_name": "DPMSolverMultistepScheduler"}, (None, None)),
    ({"_class_name": "DDPMScheduler", "thresholding": True, "sample_max_value": 1.5}, (1.5, 0.995)),
])
def test_clip_and_thresholding_become_the_default_bounds(config, bounds):
    spec = hs.read_scheduler(config)
    assert (spec.clip, spec.threshold) == bounds


# -- the scheduler config: the diffusers grid -----------------------------------------------------
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("spacing, offset", [("leading", 0), ("leading", 1), ("linspace", 0), ("trailing", 0)])
@pytest.mark.parametrize("steps", [1, 7, 20, 50])
def test_grid_timesteps_are_the_schedulers(cls, spacing, offset, steps, recwarn):
    scheduler = getattr(diffusers, cls)(timestep_spacing=spacing, steps_offset=offset)
    scheduler.set_timesteps(steps)
    config = dict(scheduler.config, _class_name=cls)
    grid = hs.diffusers_grid(config, steps)
    assert grid.timesteps == scheduler.timesteps.tolist()
    schedule = hs.schedule_from_config(config)
    assert grid.times == schedule.t_of_timestep(scheduler.timesteps).tolist()
    assert grid.denoise_final


def test_edm_grid_is_the_schedulers_sigmas():
    for cls in ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"):
        for sigma_schedule in ("karras", "exponential"):
            scheduler = getattr(diffusers, cls)(sigma_schedule=sigma_schedule)
            scheduler.set_timesteps(9)
            grid = hs.diffusers_grid(dict(scheduler.config, _class_name=cls), 9)
            sigmas = hs.read_scheduler(dict(scheduler.config, _class_name=cls)).schedule.sigma(torch.tensor(grid.times))
            torch.testing.assert_close(sigmas, scheduler.sigmas[:-1].to(torch.float64), rtol=1e-6, atol=0)
            torch.testing.assert_close(torch.tensor(grid.timesteps, dtype=torch.float64), scheduler.timesteps.double(),
                                       rtol=0, atol=1e-6)
            assert grid.times[0] == 1.0 and grid.times[-1] == 0.0 and grid.denoise_final


def test_ddim_stride_that_skips_its_own_timesteps_is_a_caveat():
    """DDIMScheduler steps to t - N // steps (diffusers issue #12633): with trailing spacing and 30 steps that is
    not its next timestep; the grid says so."""
    config = {"_class_name": "DDIMScheduler", "timestep_spacing": "trailing"}
    with pytest.warns(UserWarning, match="12633"):
        assert hs.diffusers_grid(config, 30).caveats
    assert not hs.diffusers_grid(config, 20).caveats


def test_sigma_min_final_ends_on_timestep_zero_without_a_clean_estimate():
    config = {"_class_name": "DPMSolverMultistepScheduler", "final_sigmas_type": "sigma_min"}
    with pytest.warns(UserWarning, match="sigma_min"):
        grid = hs.diffusers_grid(config, 5)
    assert not grid.denoise_final and grid.times[-1] == pytest.approx(1 / 1000)


# -- the reverse mapping --------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler"])
def test_scheduler_config_round_trips_through_diffusers(cls):
    schedule = hs.schedule_from_config({"_class_name": cls, "beta_schedule": "squaredcos_cap_v2"})
    config = hs.scheduler_config(schedule, "v", cls, clip=1.0)
    scheduler = getattr(diffusers, cls).from_config(config)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.clip_sample
    again = hs.read_scheduler(dict(scheduler.config, _class_name=cls))
    assert again.parameterization == "v"
    # trained_betas are float32 in diffusers, and their float32 cumulative product rounds differently
    torch.testing.assert_close(table(again.schedule), table(schedule), rtol=2e-6, atol=0)
    edm = nc.schedules.EDM(sigma_min=0.01, sigma_max=40.0, rho=6.0, sigma_data=0.6)
    assert hs.read_scheduler(hs.scheduler_config(edm, "edm")).schedule == edm
    with pytest.raises(ValueError, match="VPCosine has no diffusers scheduler"):
        hs.scheduler_config(nc.schedules.VPCosine(), "eps")


# -- loading ---------------------------------------------------------------------------------------
def test_pipeline_folder_loads_as_a_pipeline(ddpm_folder):
    pipe = nc.from_diffusers(ddpm_folder)
    assert nc.from_diffusers is from_diffusers
    assert pipe.sample_shape == (1, 8, 8) and pipe.is_image and pipe.run_dir == ddpm_folder
    assert isinstance(pipe.net, DiffusersUNet) and pipe.net.dtype == torch.float32
    loss = pipe.config.loss
    assert (loss.parameterization, loss.time_input, loss.time_distribution) == ("eps", "timestep", "discrete")
    torch.testing.assert_close(table(pipe.schedule), diffusers.DDPMScheduler().alphas_cumprod.double(), rtol=1e-12,
                               atol=0)
    assert pipe.bounds == (1.0, None)  # DDPMScheduler's clip_sample
    assert pipe.config.model.block_channels == [8, 16] and pipe.config.model.num_classes is None
    assert pipe.reference() is None  # the training data is not in the folder
    x = pipe.sample(3, steps=3, seed=0)
    assert x.shape == (3, 1, 8, 8) and x.abs().max() <= 1.0
    torch.testing.assert_close(pipe.sample(2, steps=3, seed=0), x[:2])  # sample i depends on (seed, i) only


def test_bare_unet_folder_objects_and_scheduler_swap(tmp_path, ddpm_folder):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path)
    bare = nc.from_diffusers(tmp_path)
    assert bare.schedule == nc.from_diffusers(ddpm_folder).schedule  # DDPMScheduler's defaults
    pipeline = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(prediction_type="sample"))
    from_object = nc.from_diffusers(pipeline)
    assert from_object.net.unet.model is unet  # shared, not copied
    assert from_object.config.loss.parameterization == "x0"
    assert nc.from_diffusers(unet, dtype=torch.float64).net.unet.model is not unet  # a float64 copy
    swapped = nc.from_diffusers(ddpm_folder, scheduler="DPMSolverMultistepScheduler")
    assert "DPMSolverMultistepScheduler" in swapped.grid_source("dpm++2m", 5, "diffusers")
    replaced = nc.from_diffusers(ddpm_folder,
                                 scheduler={"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"})
    assert replaced.config.loss.parameterization == "v"


def test_class_labels(tmp_path):
    diffusers.DDPMPipeline(unet=tiny_unet(classes=3), scheduler=diffusers.DDIMScheduler()).save_pretrained(tmp_path)
    pipe = nc.from_diffusers(tmp_path)
    assert pipe.config.model.num_classes == 3
    a, b = pipe.sample(2, steps=3, label=0), pipe.sample(2, steps=3, label=2)
    assert a.shape == (2, 1, 8, 8) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        pipe.sample(2, steps=3)


@pytest.mark.parametrize("solver", sorted(name for name, spec in SOLVERS.items() if spec.model == "denoiser"))
def test_every_solver_samples_a_loaded_folder(ddpm_folder, solver):
    pipe = nc.from_diffusers(ddpm_folder)
    if solver == "rk45":  # adaptive: loose tolerances keep it short
        with torch.no_grad():
            x = pipe.solver("rk45", 1, rtol=1e-2, atol=1e-2).run(pipe.denoiser(), pipe.schedule, (2, 1, 8, 8))
    else:
        x = pipe.sample(2, solver=solver, steps=2)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_guidance_inverse_methods_and_likelihood_run_on_a_loaded_folder(ddpm_folder):
    pipe = nc.from_diffusers(ddpm_folder)
    image = torch.rand(1, 8, 8) * 2 - 1
    mask = torch.zeros(1, 8, 8)
    mask[..., :4] = 1
    done = pipe.inpaint(image, mask, method="repaint", n=1, steps=3, jump_length=1, jump_count=1)
    assert done.shape == (1, 1, 8, 8)
    torch.testing.assert_close(done[..., :4], image[None, ..., :4], atol=0.1, rtol=0)
    assert pipe.upscale(image[:, ::2, ::2], factor=2, n=1, steps=3).shape == (1, 1, 8, 8)
    result = pipe.likelihood(image[None].double(), probes=1, rtol=1e-2, atol=1e-2)
    assert math.isfinite(result.mean_and_stderr()[0])


def test_sample_cli_reads_hf_folders(ddpm_folder, tmp_path):
    from noisecraft.cli import app

    runner = CliRunner()
    out = tmp_path / "x.png"
    res = runner.invoke(app, ["sample", f"hf:{ddpm_folder}", "--steps", "2", "--n", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    res = runner.invoke(app, ["sample", f"hf:{ddpm_folder}", "--solver", "ddim", "--steps", "4", "--grid", "diffusers",
                              "--n", "2", "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 0, res.output
    assert "DDPMScheduler timesteps (leading spacing, steps_offset 0), 4 steps" in res.output
    res = runner.invoke(app, ["sample", f"hf:{tmp_path / 'nothing'}", "--n", "2"])
    assert res.exit_code == 2 and "is not a folder" in res.output


def test_restore_and_likelihood_commands_read_hf_folders(ddpm_folder, tmp_path):
    """denoise (default output in the folder) and likelihood take `hf:PATH` like sample."""
    from PIL import Image

    from noisecraft.cli import app

    runner = CliRunner()
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(tmp_path / "noisy.png")
    res = runner.invoke(app, ["denoise", f"hf:{ddpm_folder}", "--image", str(tmp_path / "noisy.png"), "--sigma", "0.3",
                              "--steps", "2", "--n", "1"])
    assert res.exit_code == 0, res.output
    assert (ddpm_folder / "denoise_posterior.png").is_file()
    res = runner.invoke(app, ["likelihood", f"hf:{ddpm_folder}", "--data", "digits", "--n", "2", "--probes", "1",
                              "--rtol", "0.01", "--atol", "0.01"])
    assert res.exit_code == 0, res.output
    assert "bits/dim" in res.output


# -- bad input --------------------------------------------------------------------------------------
def write(path, name: str, value: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(value))


def test_folder_without_a_unet_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="holds no model_index.json or config.json; expected a diffusers folder"):
        from_diffusers(tmp_path)
    write(tmp_path, "model_index.json", {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"]})
    with pytest.raises(ValueError, match="model_index.json' names no unet; expected a pipeline with a UNet2DModel"):
        from_diffusers(tmp_path)
    write(tmp_path, "model_index.json", {"unet": ["diffusers", "UNet2DConditionModel"]})
    with pytest.raises(ValueError, match="UNet2DConditionModel; expected UNet2DModel"):
        from_diffusers(tmp_path)
    write(tmp_path, "model_index.json", {"unet": ["diffusers", "UNet2DModel"]})
    with pytest.raises(ValueError, match="unet' has no config.json; expected a UNet2DModel folder"):
        from_diffusers(tmp_path)


def test_pickled_weights_are_not_loaded(tmp_path):
    tiny_unet().save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ValueError, match="has no .safetensors weights"):
        from_diffusers(tmp_path)


@pytest.mark.parametrize("config, message", [
    ({"_class_name": "FancyScheduler"}, "unknown scheduler class 'FancyScheduler'; expected one of"),
    ({"_class_name": "DDPMScheduler", "prediction_type": "flow_prediction"},
     "prediction_type 'flow_prediction' is not supported; expected one of \\['epsilon', 'v_prediction', 'sample'\\]"),
    ({"_class_name": "EDMEulerScheduler", "prediction_type": "sample"},
     "prediction_type 'sample' is not supported for EDMEulerScheduler; expected one of"),
    ({"_class_name": "DDIMScheduler", "beta_schedule": "quadratic"}, "beta_schedule 'quadratic' is not supported"),
])
def test_bad_scheduler_config_names_the_file(ddpm_folder, tmp_path, config, message):
    folder = tmp_path / "copy"
    shutil.copytree(ddpm_folder, folder)
    write(folder / "scheduler", "scheduler_config.json", config)
    with pytest.raises(ValueError, match="scheduler_config.json: " + message):
        from_diffusers(folder)


def test_unsupported_unet_and_grid_options_are_refused(tmp_path, ddpm_folder):
    tiny_unet(time_embedding_type="fourier").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config.json: time_embedding_type 'fourier' is not supported"):
        from_diffusers(tmp_path)
    with pytest.raises(ValueError, match="`dtype` must be torch.float32 or torch.float64"):
        from_diffusers(ddpm_folder, dtype=torch.float16)
    with pytest.raises(ValueError, match="the diffusers grid of EulerDiscreteScheduler is not reproduced"):
        from_diffusers(ddpm_folder, scheduler="EulerDiscreteScheduler").sample(1, steps=3, grid="diffusers")
    karras = {"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True}
    with pytest.raises(ValueError, match="use_karras_sigmas=True is not reproduced"):
        hs.diffusers_grid(karras, 5)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1 for the diffusers grid"):
        hs.diffusers_grid({"_class_name": "DDIMScheduler"}, 0)

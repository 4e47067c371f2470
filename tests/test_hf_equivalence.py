"""A diffusers folder loaded by `nc.from_diffusers` and sampled by noisecraft's solvers on the diffusers grid equals
diffusers' own scheduler loop on identical inputs (the same tiny random float64 UNet2DModel, the same x_T).

DDIMScheduler (eta 0) <-> "ddim"; DPMSolverMultistepScheduler (dpmsolver++, order 2, solver_type "heun", default
lower_order_final and final_sigmas_type "zero") <-> "dpm++2m", and with its default solver_type "midpoint" <->
"dpm++2m" with midpoint=True, which the diffusers grid sets; EDMEulerScheduler <-> "ddim" (Euler in sigma);
Karras et al.'s Alg. 2 written with EDMEulerScheduler's preconditioning <-> "heun" with space="sigma";
EDMDPMSolverMultistepScheduler (heun) <-> "dpm++2m". Tolerance 1e-5 relative to the samples' scale: a random
eps-network drives samples to hundreds, and diffusers' DPM-Solver and EDM steps compute in float32 whatever the
model's dtype (DDIM's alpha table is cast to float64 here, so it is checked to round-off).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.core.noise import SampleNoise
from noisecraft.solvers import solve

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64
SHAPE = (2, 2, 8, 8)
#: zero terminal SNR as it is used (Lin et al. 2024): rescaled latent-diffusion betas, trailing timesteps
ZERO_SNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012}


def tiny_unet(classes: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), norm_num_groups=4,
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=classes,
    ).to(F64).eval()


UNET = tiny_unet()


def folder(tmp_path, scheduler, unet=UNET) -> str:
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path)
    return str(tmp_path)


def diffusers_loop(scheduler, steps: int, x: torch.Tensor, unet=UNET, labels=None) -> torch.Tensor:
    """The standard loop of diffusers' pipelines: scale the input, call the UNet, step."""
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "final_alpha_cumprod"):  # DDIM's table in float64, as noisecraft's
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(F64)
        scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(F64)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t, class_labels=labels).sample
            x = scheduler.step(out, t, x).prev_sample
    return x


def ours(pipe, solver: str, steps: int, x_T: torch.Tensor, **options) -> torch.Tensor:
    """noisecraft's `solver` on the pipeline's diffusers grid from x_T."""
    cfg = pipe.solver(solver, steps, grid="diffusers")
    with torch.no_grad():
        x, info = solve(pipe.denoiser(), pipe.schedule, x_T, cfg.grid, cfg.solver, denoise_final=cfg.denoise_final,
                        **{**cfg.options, **options})
    assert info.nfe == (2 * steps - 1 if solver == "heun" else steps)  # as many evaluations as diffusers
    return x


def assert_close(x: torch.Tensor, ref: torch.Tensor) -> None:
    scale = max(1.0, ref.abs().max().item())
    err = (x - ref).abs().max().item()
    assert err <= 1e-5 * scale, f"max |noisecraft - diffusers| = {err:.3g} at sample scale {scale:.3g}"


VP_CASES = [
    ("ddim", "DDIMScheduler", {"steps_offset": 1, "clip_sample": False}, 10),
    ("ddim", "DDIMScheduler", {"timestep_spacing": "trailing", "clip_sample": False}, 10),
    ("dpm++2m", "DPMSolverMultistepScheduler", {"solver_type": "heun"}, 12),
    ("dpm++2m", "DPMSolverMultistepScheduler",
     {"solver_type": "heun", "timestep_spacing": "leading", "steps_offset": 1}, 7),
    ("dpm++2m", "DPMSolverMultistepScheduler", {"solver_type": "heun", "timestep_spacing": "trailing"}, 16),
    ("dpm++2m", "DPMSolverMultistepScheduler", {}, 12),  # diffusers' default: solver_type "midpoint"
]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("solver, cls, options, steps", VP_CASES,
                         ids=["ddim-leading", "ddim-trailing", "dpm-linspace", "dpm-leading", "dpm-trailing",
                              "dpm-default-midpoint"])
def test_vp_folder_matches_diffusers_loop(tmp_path, prediction, solver, cls, options, steps):
    scheduler = getattr(diffusers, cls)(prediction_type=prediction, **options)
    pipe = nc.from_diffusers(folder(tmp_path, scheduler), dtype=F64)
    x_T = torch.randn(SHAPE, dtype=F64, generator=gen(1))
    ref = diffusers_loop(type(scheduler).from_config(scheduler.config), steps, x_T.clone())
    assert_close(ours(pipe, solver, steps, x_T.clone()), ref)


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
@pytest.mark.parametrize("solver, cls, options", [("ddim", "DDIMScheduler", {"clip_sample": False}),
                                                  ("dpm++2m", "DPMSolverMultistepScheduler", {"solver_type": "heun"})])
def test_zero_terminal_snr_folder_matches_diffusers_loop(tmp_path, prediction, solver, cls, options):
    """alpha_N = 0: both start from pure noise at timestep N - 1 (t = 1) and stay finite."""
    scheduler = getattr(diffusers, cls)(prediction_type=prediction, **ZERO_SNR, **options)
    pipe = nc.from_diffusers(folder(tmp_path, scheduler), dtype=F64)
    assert pipe.solver(solver, 10, grid="diffusers").grid[0] == 1.0
    x_T = torch.randn(SHAPE, dtype=F64, generator=gen(2))
    ref = diffusers_loop(type(scheduler).from_config(scheduler.config), 10, x_T.clone())
    x = ours(pipe, solver, 10, x_T.clone())
    assert torch.isfinite(x).all()
    assert_close(x, ref)


def test_pipeline_sample_reproduces_diffusers_from_its_prior_draw(tmp_path):
    """pipe.sample(grid="diffusers") end to end, class labels included: diffusers started from the same x_T,
    sigma(t_0) z with z the pipeline's seeded draw (diffusers' own start is z: init_noise_sigma 1)."""
    unet = tiny_unet(classes=3)
    scheduler = diffusers.DDIMScheduler(prediction_type="v_prediction", clip_sample=False, steps_offset=1)
    pipe = nc.from_diffusers(folder(tmp_path, scheduler, unet), dtype=F64)
    x = pipe.sample(2, solver="ddim", steps=10, grid="diffusers", seed=5, label=1)
    t0 = pipe.solver("ddim", 10, grid="diffusers").grid[0]
    z = SampleNoise.from_generator(gen(5), 2).randn(SHAPE[1:], F64, "cpu")
    x_T = float(pipe.schedule.sigma(t0)) * z
    ref = diffusers_loop(diffusers.DDIMScheduler.from_config(scheduler.config), 10, x_T, unet,
                         torch.ones(2, dtype=torch.long))
    assert x.dtype == torch.float32
    assert_close(x.double(), ref)
    assert "DDIMScheduler timesteps (leading spacing, steps_offset 1), 10 steps" in pipe.grid_source("ddim", 10,
                                                                                                        "diffusers")


def karras_heun(scheduler, steps: int, x: torch.Tensor) -> torch.Tensor:
    """Karras et al. 2022, Alg. 2 (deterministic) on diffusers' EDM sigmas, with its precondition_* functions."""
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.to(F64)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = UNET(scheduler.precondition_inputs(x, sigma), scheduler.precondition_noise(sigma)).sample
        return scheduler.precondition_outputs(x, out, sigma)

    with torch.no_grad():
        for s, s_next in itertools.pairwise(sigmas):
            d = (x - denoise(x, s)) / s
            x_euler = x + (s_next - s) * d
            x = x_euler if s_next == 0 else x + (s_next - s) * 0.5 * (d + (x_euler - denoise(x_euler, s_next)) / s_next)
    return x


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_edm_folder_matches_diffusers_edm_schedulers(tmp_path, prediction):
    scheduler = diffusers.EDMEulerScheduler(prediction_type=prediction)
    pipe = nc.from_diffusers(folder(tmp_path / "euler", scheduler), dtype=F64)
    x_T = 80.0 * torch.randn(SHAPE, dtype=F64, generator=gen(3))
    steps = 8
    assert_close(ours(pipe, "ddim", steps, x_T.clone()), diffusers_loop(scheduler, steps, x_T.clone()))
    assert_close(ours(pipe, "heun", steps, x_T.clone(), space="sigma"), karras_heun(scheduler, steps, x_T.clone()))
    dpm = diffusers.EDMDPMSolverMultistepScheduler(prediction_type=prediction, solver_type="heun")
    pipe = nc.from_diffusers(folder(tmp_path / "dpm", dpm), dtype=F64)
    assert_close(ours(pipe, "dpm++2m", steps, x_T.clone()), diffusers_loop(dpm, steps, x_T.clone()))

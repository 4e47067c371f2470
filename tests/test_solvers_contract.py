"""The common contract of every solver: shape and dtype, determinism, batch-size invariance, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft import schedules as S

SCHED = S.VPLinear()
MIX = nc.oracle.gaussian(torch.zeros(16), torch.eye(16) * 0.3)
DEN = MIX.denoiser(SCHED)


def run(solver: str, n: int, seed: int = 0, dtype=torch.float32, shape=(16,), **kw):
    return nc.sample(DEN, SCHED, solver=solver, steps=4, shape=(n, *shape), generator=gen(seed), dtype=dtype, **kw)


@pytest.mark.parametrize("solver", sorted(nc.SOLVERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_image_shapes(solver, dtype):
    x = run(solver, 3, dtype=dtype)
    assert x.shape == (3, 16) and x.dtype == dtype
    img = run(solver, 2, dtype=dtype, shape=(1, 4, 4))  # images: the oracle flattens trailing dims
    assert img.shape == (2, 1, 4, 4) and img.dtype == dtype and torch.isfinite(img).all()


@pytest.mark.parametrize("solver", sorted(nc.SOLVERS))
def test_determinism_and_batch_size_invariance(solver):
    a = run(solver, 12, seed=3, dtype=torch.float64)
    b = run(solver, 12, seed=3, dtype=torch.float64)
    c = run(solver, 5, seed=3, dtype=torch.float64)
    d = run(solver, 12, seed=4, dtype=torch.float64)
    assert torch.equal(a, b)
    assert torch.allclose(a[:5], c, atol=1e-6)  # sample i depends on (seed, i) only
    assert not torch.allclose(a, d)


def test_heun_churn_is_seeded_and_batch_invariant():
    a = run("heun", 8, seed=1, dtype=torch.float64, churn=10.0)
    assert torch.allclose(a[:3], run("heun", 3, seed=1, dtype=torch.float64, churn=10.0), atol=1e-6)
    assert not torch.allclose(a, run("heun", 8, seed=1, dtype=torch.float64))


@pytest.mark.parametrize("solver", sorted(nc.SOLVERS))
def test_nfe_is_reported(solver):
    _, info = nc.sample(DEN, SCHED, solver=solver, steps=4, shape=(2, 16), generator=gen(0), return_info=True)
    spec = nc.SOLVERS[solver]
    if spec.nfe_per_step:
        assert info.nfe == spec.nfe_per_step * 4 + 1
    else:
        assert info.nfe > 4


@pytest.mark.parametrize("corrector_steps", [1, 2, 3])
def test_pc_nfe_counts_every_corrector_step(corrector_steps, monkeypatch):
    """Predictor-corrector takes 1 + corrector_steps evaluations per step: the registry, the config's budget
    and the progress bar's total all say so (they said 2 whatever the option)."""
    totals = []

    class Bar:
        def __init__(self, total=None, **_):
            totals.append(total)

        def update(self, n):
            pass

        def close(self):
            pass

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    _, info = nc.sample(DEN, SCHED, solver="pc", steps=4, shape=(2, 16), generator=gen(0), return_info=True,
                        progress=True, corrector_steps=corrector_steps)
    assert info.nfe == (1 + corrector_steps) * 4 + 1
    assert nc.SOLVERS["pc"].evaluations_per_step({"corrector_steps": corrector_steps}) == 1 + corrector_steps
    assert nc.SolverConfig(solver="pc", steps=4, options={"corrector_steps": corrector_steps}).nfe() == info.nfe
    assert totals == [info.nfe]


@pytest.mark.parametrize("solver", sorted(nc.SOLVERS))
def test_predicted_nfe_matches_the_count(solver):
    _, info = nc.sample(DEN, SCHED, solver=solver, steps=3, shape=(2, 16), generator=gen(0), return_info=True)
    predicted = nc.SolverConfig(solver=solver, steps=3).nfe()
    assert predicted == info.nfe or (predicted is None and solver == "rk45")


@pytest.mark.parametrize("steps", [-3, 2.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        nc.sample(DEN, SCHED, steps=steps, shape=(2, 16))


@pytest.mark.parametrize("solver", sorted(nc.SOLVERS))
def test_zero_steps_is_the_clean_estimate_at_t_max(solver):
    """steps=0: one evaluation, x0_hat(x_T, t_max) from the schedule's own t_max (a one-step student's sampler)."""
    x, info = nc.sample(DEN, SCHED, solver=solver, steps=0, shape=(3, 16), generator=gen(2), return_info=True,
                        dtype=torch.float64)
    x_T = SCHED.sigma(SCHED.t_max) * nc.SampleNoise.from_generator(gen(2), 3).randn((16,), torch.float64, "cpu")
    assert info.nfe == 1 and info.times.tolist() == [SCHED.t_max]
    assert torch.allclose(x, DEN(x_T, torch.full((3,), SCHED.t_max, dtype=torch.float64)))
    with pytest.raises(ValueError, match="denoise_final"):
        nc.sample(DEN, SCHED, solver=solver, steps=0, shape=(3, 16), denoise_final=False)


@pytest.mark.parametrize(
    "times, message",
    [
        ([0.5, 0.6, 0.1], "strictly decreasing"),
        ([1.2, 0.5, 0.1], r"\[0, 1\]"),
        ([0.5, 0.3, -0.1], r"\[0, 1\]"),
        ([], "at least 1"),
        ([0.5, 0.2, 0.0], "log-SNR is not finite"),
        ([0.5, float("nan")], r"\[0, 1\]"),
    ],
)
def test_bad_time_grids(times, message):
    with pytest.raises(ValueError, match=message):
        nc.sample(DEN, SCHED, grid=times, shape=(2, 16))


def test_shape_mismatch_and_nan_from_denoise():
    with pytest.raises(ValueError, match="dimension 16"):
        nc.sample(DEN, SCHED, shape=(2, 3))
    bad_shape = lambda x, t: x[:, :1]  # noqa: E731
    with pytest.raises(ValueError, match="returned shape"):
        nc.sample(bad_shape, SCHED, shape=(2, 16))
    nan = lambda x, t: x * math.nan  # noqa: E731
    with pytest.raises(ValueError, match="NaN or inf at t="):
        nc.sample(nan, SCHED, shape=(2, 16))


def test_bad_solver_names_and_options():
    with pytest.raises(ValueError, match="unknown solver 'dpm\\+\\+9m'"):
        nc.sample(DEN, SCHED, solver="dpm++9m", shape=(2, 16))
    with pytest.raises(ValueError, match="does not take option"):
        nc.sample(DEN, SCHED, solver="ddim", shape=(2, 16), churn=1.0)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        nc.sample(DEN, SCHED, solver="ddim", shape=(2, 16), eta=-1.0)
    with pytest.raises(ValueError, match="unknown grid"):
        nc.sample(DEN, SCHED, grid="cosine", shape=(2, 16))
    with pytest.raises(ValueError, match="shape must be"):
        nc.sample(DEN, SCHED, shape=(0, 16))


def test_ddim_eta_one_equals_ddpm_posterior():
    """DDIM with eta = 1 is DDPM ancestral sampling with the posterior variance (Song et al. 2021a)."""
    a = run("ddpm", 6, seed=2, dtype=torch.float64)
    b = run("ddim", 6, seed=2, dtype=torch.float64, eta=1.0)
    assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("solver", sorted(nc.SOLVERS))
def test_solver_config_round_trips_through_yaml(solver):
    import yaml

    from noisecraft.solvers import SolverConfig

    options = {"churn": 2.0} if solver == "heun" else {}
    config = SolverConfig(solver=solver, steps=3, grid="karras", t_max=0.9, options=options)
    again = SolverConfig.model_validate(yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert again == config
    a = config.run(DEN, SCHED, (4, 16), gen(1), dtype=torch.float64)
    b = again.run(DEN, SCHED, (4, 16), gen(1), dtype=torch.float64)
    assert torch.equal(a, b)


def test_solver_config_rejects_unknown_names():
    from noisecraft.solvers import SolverConfig

    with pytest.raises(ValueError, match="unknown solver"):
        SolverConfig(solver="magic")
    with pytest.raises(ValueError, match="does not take option"):
        SolverConfig(solver="ddim", options={"order": 2})
    with pytest.raises(ValueError, match="stepz"):
        SolverConfig.model_validate({"solver": "ddim", "stepz": 3})

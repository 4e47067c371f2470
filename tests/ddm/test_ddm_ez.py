"""EZ-diffusion (Wagenmakers et al. 2007): closed form, edge corrections, errors."""

from __future__ import annotations

import numpy as np
import pytest

from noisecraft.ddm import ez, ez_from_data, simulate
from noisecraft.ddm.density import prob_upper


def _moments(v: float, a: float, t0: float):
    """Pc, VRT, MRT of the correct (upper) responses of the z = 1/2 model (Wagenmakers et al. 2007, eq. 6-7 inverted)."""
    y = -v * a
    pc = float(prob_upper(v, a, 0.5))
    mdt = (a / (2 * v)) * (1 - np.exp(y)) / (1 + np.exp(y))
    vrt = (a / (2 * v**3)) * (2 * y * np.exp(y) - np.exp(2 * y) + 1) / (np.exp(y) + 1) ** 2
    return pc, vrt, mdt + t0


@pytest.mark.parametrize("v, a, t0", [(1.0, 1.2, 0.3), (2.5, 0.8, 0.2), (-0.7, 1.6, 0.4)])
def test_ez_inverts_its_moment_equations(v, a, t0):
    pc, vrt, mrt = _moments(abs(v), a, t0) if v > 0 else _moments(v, a, t0)
    e = ez(pc, vrt, mrt)
    assert (e.v, e.a, e.t0) == pytest.approx((v, a, t0), rel=1e-9)


def test_s_scaling():
    pc, vrt, mrt = _moments(1.5, 1.1, 0.3)
    e = ez(pc, vrt, mrt, s=0.1)
    assert (e.v, e.a, e.t0) == pytest.approx((0.15, 0.11, 0.3), rel=1e-9)


def test_ez_on_simulated_data():
    df = simulate(20000, 1.5, 1.2, 0.5, 0.3, seed=2)
    e = ez_from_data(df.rt, df.response)
    assert (e.v, e.a, e.t0) == pytest.approx((1.5, 1.2, 0.3), rel=0.05)


def test_edge_corrections():
    e1 = ez(1.0, 0.01, 0.5, n=100)
    assert e1.pc_used == 1 - 1 / 200 and "edge correction" in e1.note and e1.v > 0
    e0 = ez(0.0, 0.01, 0.5, n=100)
    assert e0.pc_used == 1 / 200 and e0.v == pytest.approx(-e1.v)
    # Pc = 1/2: the v -> 0 limit, continuous with the formula on either side
    half = ez(0.5, 0.04, 0.6)
    assert half.v == 0 and half.a == pytest.approx((24 * 0.04) ** 0.25)
    assert half.t0 == pytest.approx(0.6 - half.a**2 / 4)
    near = ez(0.5 + 1e-4, 0.04, 0.6)
    assert near.a == pytest.approx(half.a, rel=1e-5) and near.t0 == pytest.approx(half.t0, rel=1e-5)
    with pytest.raises(ValueError, match="needs the number of trials"):
        ez(1.0, 0.01, 0.5)
    with pytest.raises(ValueError, match="vrt=0"):
        ez(0.8, 0.0, 0.5)
    with pytest.raises(ValueError, match="at least 2 correct"):
        ez_from_data(np.array([0.5, 0.6]), np.array([0, 1]))

"""Shared fixtures: small oracles and all schedules."""

from __future__ import annotations

import pytest

import noisecraft as nc
from noisecraft import schedules as S

ALL_SCHEDULES = {
    "vp_linear": S.VPLinear(),
    "vp_cosine": S.VPCosine(),
    "discrete_vp": S.DiscreteVP(),
    "sub_vp": S.SubVP(),
    "ve": S.VE(sigma_min=0.01, sigma_max=50.0),
    "edm": S.EDM(),
    "rectified_flow": S.RectifiedFlow(),
}


@pytest.fixture(params=list(ALL_SCHEDULES), ids=list(ALL_SCHEDULES))
def schedule(request) -> S.Schedule:
    return ALL_SCHEDULES[request.param]


@pytest.fixture
def ring() -> nc.oracle.GaussianMixture:
    return nc.oracle.ring8()


@pytest.fixture
def mix16() -> nc.oracle.GaussianMixture:
    return nc.oracle.mixture16d()


def pytest_configure(config):
    # two xdist workers on two cores: one intra-op thread each avoids oversubscription
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # and jobs the tests start choose 1 (noisecraft.runs.threads) without probing
    torch.set_num_threads(1)

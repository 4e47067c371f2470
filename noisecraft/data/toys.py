"""2-D toy distributions: eight Gaussians on a ring, two moons, a swiss roll, a checkerboard.

The classic test beds of score-based modelling (Grathwohl et al. 2019, FFJORD; Song & Ermon 2019),
each drawn from a seeded numpy generator and scaled to roughly unit spread.
"""

from __future__ import annotations

import numpy as np

TOYS: tuple[str, ...] = ("8gaussians", "moons", "swissroll", "checkerboard")


def toy_2d(name: str, n: int, seed: int = 0) -> np.ndarray:
    """n points of toy `name`, float32, shape (n, 2)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if name == "8gaussians":
        centers = 2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)
        x = centers[rng.integers(0, 8, n)] + 0.15 * rng.normal(size=(n, 2))
    elif name == "moons":
        from sklearn.datasets import make_moons

        x, _ = make_moons(n, noise=0.05, random_state=seed)
        x = (x - np.array([0.5, 0.25])) * 1.5
    elif name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        x, _ = make_swiss_roll(n, noise=0.3, random_state=seed)
        x = x[:, [0, 2]] / 6.0
    elif name == "checkerboard":
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + np.floor(x1 + 2) % 2
        x = np.stack([x1, x2], 1)
    else:
        raise ValueError(f"unknown toy dataset {name!r}; expected one of {list(TOYS)}")
    return x.astype(np.float32)

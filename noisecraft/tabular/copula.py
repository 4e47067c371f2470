"""A Gaussian-copula baseline for synthetic tables (the classical reference the benchmark compares against).

Every column becomes one standard-normal score: numbers through the same quantile transform the diffusion
model uses; a category k with training share p_k owns the interval [P_{k-1}, P_k) of cumulative shares and
a row's score is Phi^{-1} of a uniform draw inside its interval (the frequency-interval encoding of SDV's
GaussianCopula, Patki et al. 2016, "The Synthetic Data Vault", sec. 3.2, here written from the
description). The scores' correlation matrix is the copula (Nelsen 2006, ch. 2); sampling draws from that
multivariate normal and maps each score back. Missing values are categories, as in the diffusion model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr, ndtri

from noisecraft.tabular.schema import TableSchema, infer_schema, read_table
from noisecraft.tabular.transform import TableCodec


class GaussianCopula:
    """fit(table) then sample(n): a multivariate normal over per-column normal scores."""

    def __init__(self, max_categories: int = 10, n_quantiles: int = 1000) -> None:
        self.max_categories, self.n_quantiles = max_categories, n_quantiles
        self.schema: TableSchema | None = None
        self.codec: TableCodec | None = None
        self.cumulative: list[np.ndarray] = []
        self.cholesky: np.ndarray | None = None

    def fit(self, data: str | Path | pd.DataFrame, target: str | None = None, types: dict[str, str] | None = None,
            seed: int = 0) -> GaussianCopula:
        frame = read_table(data)
        self.schema = infer_schema(frame, target, types, self.max_categories)
        self.codec = TableCodec.fit(frame, self.schema, self.n_quantiles)
        x_num, tokens = self.codec.encode(frame)
        rng = np.random.default_rng(seed)
        scores = [x_num.double().numpy()]
        self.cumulative = []
        for j, k in enumerate(self.codec.cardinalities):
            codes = tokens[:, j].numpy()
            upper = np.cumsum(np.bincount(codes, minlength=k)) / len(codes)
            lower = np.r_[0.0, upper[:-1]]
            u = lower[codes] + rng.uniform(size=len(codes)) * (upper[codes] - lower[codes])
            scores.append(ndtri(np.clip(u, 1e-6, 1 - 1e-6))[:, None])
            self.cumulative.append(upper)
        z = np.concatenate(scores, 1)
        corr = np.corrcoef(z, rowvar=False) if z.shape[1] > 1 else np.ones((z.shape[1], z.shape[1]))
        corr = np.nan_to_num(np.atleast_2d(corr), nan=0.0)
        np.fill_diagonal(corr, 1.0)
        # a small ridge keeps the factorisation defined when columns are (near) duplicates
        self.cholesky = np.linalg.cholesky(corr + 1e-6 * np.eye(len(corr)))
        return self

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        if self.codec is None or self.cholesky is None:
            raise RuntimeError("the copula is not fitted: call fit(...) first")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, len(self.cholesky))) @ self.cholesky.T
        d = self.codec.num_dim
        tokens = np.stack([np.minimum(np.searchsorted(upper, ndtr(z[:, d + j]), side="right"), len(upper) - 1)
                           for j, upper in enumerate(self.cumulative)], 1) if self.cumulative else np.zeros((n, 0), int)
        return self.codec.decode(torch.as_tensor(z[:, :d]), torch.as_tensor(tokens, dtype=torch.long))

"""Hierarchical Bayesian estimation of the DDM: group and participant parameters, sampled by NUTS.

The model is HDDM's (Wiecki, Sofer & Frank 2013): every participant j has its own parameter
vector theta_j (the entries of a :class:`~noisecraft.ddm.spec.ModelSpec`'s design, so multi-factor
specs, linear/affine rules, stimulus coding, the full model and the lapse mixture all carry over),
drawn from a group distribution. Each entry k is mapped to an unbounded scale u = g_k(theta) (log
for a, t0, sv, sz, st0; logit for z and the lapse probability; identity for drifts, intercepts and
slopes) and

    u_jk ~ N(mu_k, tau_k)   (sampled centred, or as u_jk = mu_k + tau_k * eta_jk with
                             eta_jk ~ N(0, 1), chosen per entry from the data: PARAMETERIZATION)
    mu_k ~ N(m_k, s_k),  tau_k ~ HalfNormal(h_k)

with ``group_only`` entries (by default the regression slopes, as HDDM's ``group_only_regressors``)
shared by every participant (u_jk = mu_k). The likelihood is the exact density of
:mod:`noisecraft.ddm.density` with its analytic gradient (the same code as maximum likelihood),
handed to NumPyro's NUTS (Hoffman & Gelman 2014) through ``jax.pure_callback``; no sampler is
written here. Convergence is reported as split R-hat and bulk ESS (Vehtari et al. 2021) and the
number of divergent transitions. The priors (``PRIORS``) are weakly informative, centred on the
ranges Matzke & Wagenmakers (2009) report; each can be replaced.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from noisecraft.ddm.fit import (
    _DATA_OPTIONS,
    CellLikelihood,
    _Problem,
    _setup,
    _spec,
    fit,
    fit_defaults,
)
from noisecraft.ddm.spec import PARAMS, ModelSpec, _fmt

__all__ = ["PRIORS", "BayesResult", "bayes"]

#: per parameter: (transform, prior centre m on the natural scale, prior sd of mu on the transformed
#: scale, half-normal scale of tau). v, a and sv are in units of s. Intercepts and slopes use the
#: identity transform: intercept ~ N(centre, spread), slope ~ N(0, spread), spread given below.
PRIORS: dict[str, tuple[str, float, float, float]] = {
    "v": ("identity", 0.0, 2.0, 1.0),
    "a": ("log", 1.5, 0.5, 0.3),
    "z": ("logit", 0.5, 0.5, 0.3),
    "t0": ("log", 0.3, 0.5, 0.3),
    "sv": ("log", 0.8, 0.5, 0.3),
    "sz": ("log", 0.2, 0.5, 0.3),
    "st0": ("log", 0.1, 0.5, 0.3),
    "lapse": ("logit", 0.03, 1.0, 0.5),
}
#: natural-scale spread of intercepts and slopes, per parameter (v, a, sv in units of s)
SPREAD: dict[str, float] = {"v": 2.0, "a": 0.75, "z": 0.2, "t0": 0.15, "sv": 0.5, "sz": 0.1, "st0": 0.1,
                            "lapse": 0.05}
_SCALED = ("v", "a", "sv")
#: how participants' values are sampled around the group, per entry: "centred" (u_jk ~ N(mu_k, tau_k)),
#: "non-centred" (u_jk = mu_k + tau_k eta_jk) or "auto": centred where the participants' data pin u_jk more
#: tightly than the group spreads them (see _centring). Centred sampling wins with hundreds of trials per
#: participant: on Cavanagh's 14 participants, 1 chain x 100 + 100, centred took 65 s (min bulk ESS 69),
#: non-centred 398 s (ESS 25); with 100 trials and a narrow group, centred sampling diverges.
PARAMETERIZATION = "auto"
#: fewest participants for which "auto" samples any entry centred
MIN_CENTRED = 8


@dataclass(frozen=True)
class _Entry:
    """One entry of theta: its parameter, kind, transform and prior on the transformed scale."""

    name: str
    param: str
    kind: str
    transform: str
    loc: float
    scale: float
    tau: float
    varying: bool


def _forward(transform: str, x: np.ndarray) -> np.ndarray:
    """g(theta): the unbounded scale."""
    if transform == "log":
        return np.log(x)
    if transform == "logit":
        return np.log(x) - np.log1p(-x)
    return x


def _entries(names: list[str], kinds: list[str], design_slices: dict[str, slice], spec: ModelSpec,
             priors: dict, group_only: str | Sequence[str]) -> list[_Entry]:
    """The prior of each theta entry; raises naming an unknown parameter or entry."""
    param_of = {}
    for p, sl in design_slices.items():
        for i in range(sl.start, sl.stop):
            param_of[i] = p
    unknown = sorted(set(priors) - set(PARAMS))
    if unknown:
        raise ValueError(f"priors name unknown parameter(s) {unknown}; expected some of {list(PARAMS)}")
    if isinstance(group_only, str) and group_only not in ("slopes", "none"):
        group_only = [group_only]
    if not isinstance(group_only, str):
        missing = sorted(set(group_only) - set(names) - set(PARAMS))
        if missing:
            raise ValueError(f"group_only names {missing}, which are neither parameters nor entries {names}")
    out = []
    for i, (name, kind) in enumerate(zip(names, kinds)):
        p = param_of[i]
        transform, centre, sd, tau = priors.get(p, PRIORS[p])
        unit = spec.s if p in _SCALED else 1.0
        if kind == "level":
            loc = float(_forward(transform, np.asarray(centre * (unit if transform != "logit" else 1.0))))
            if transform == "identity":
                sd, tau = sd * unit, tau * unit
        else:
            transform = "identity"
            loc = centre * unit if kind == "intercept" else 0.0
            sd = SPREAD[p] * unit
            tau = 0.5 * sd
        if group_only == "slopes":
            varying = kind != "slope"
        elif group_only == "none":
            varying = True
        else:
            varying = name not in group_only and p not in group_only
        out.append(_Entry(name, p, kind, transform, loc, sd, tau, varying))
    return out


class _Group:
    """Participants' problems side by side: the joint log-likelihood of a (J, K) theta and its gradient."""

    def __init__(self, labels: list, problems: list[_Problem], by: str):
        names = problems[0].design.names
        for label, prob in zip(labels, problems):
            if prob.design.names != names:
                raise ValueError(
                    f"{by}={_fmt(label)} has design entries {prob.design.names}, the first participant "
                    f"{names}: every participant needs every level the spec's columns name"
                )
        self.labels, self.problems, self.names = labels, problems, names

        first = problems[0]
        self.rt = np.concatenate([p.data.rt for p in problems])
        self.upper = np.concatenate([p.upper for p in problems])
        self.lapse_c = np.concatenate([p.lapse_c for p in problems])
        sizes = [len(p.data.levels) for p in problems]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.cell = np.concatenate([p.data.cond + o for p, o in zip(problems, self.offsets)])
        self.params = [p for p in PARAMS if first.design.slices[p].stop > first.design.slices[p].start]
        # every participant's cells in one likelihood (the spec decides basic or full: the same for everyone)
        self.likelihood = CellLikelihood(self.rt, self.upper, self.cell, int(self.offsets[-1]), self.lapse_c,
                                         first.spec.s, first.basic)

    def loglik_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Sum over participants of log L_j(theta_j), and its gradient (J, K), in one density call.

        The fit's box is the support: it keeps the series finite where a wild early warm-up step lands.
        """
        grad = np.zeros_like(theta)
        cells = []
        for j, prob in enumerate(self.problems):
            if not np.all((theta[j] >= prob.design.lower) & (theta[j] <= prob.design.upper)):
                return -np.inf, grad
            vals = prob.design.values(theta[j])
            if prob.design.valid(vals) > 0:
                return -np.inf, grad
            cells.append(vals)
        ll, per_cell = self.likelihood({p: np.concatenate([v[p] for v in cells]) for p in PARAMS})
        total = float(np.sum(ll))
        if not np.isfinite(total):
            return -np.inf, grad
        for j, prob in enumerate(self.problems):
            lo, hi = self.offsets[j], self.offsets[j + 1]
            for p in self.params:
                grad[j, prob.design.slices[p]] = prob.design.chain(p, per_cell[p][lo:hi])
        return total, grad


@dataclass
class BayesResult:
    """Posterior draws of a hierarchical DDM and their diagnostics.

    ``group`` holds (chains, draws, K) draws of each entry's group centre g^-1(mu_k) (the group
    median on the natural scale for log/logit entries), ``tau`` (chains, draws, K) the group spread on
    the transformed scale, ``theta`` (chains, draws, J, K) the participants' parameters.
    """

    spec: ModelSpec
    by: str
    participants: list
    names: list[str]
    entries: list[_Entry]
    group: np.ndarray
    tau: np.ndarray
    theta: np.ndarray
    loglik: np.ndarray  # (chains, draws)
    divergences: int
    time_s: float
    n_trials: int
    dic: float = float("nan")
    p_dic: float = float("nan")
    centred: tuple[str, ...] = ()  # the varying entries sampled centred (the others non-centred)
    _summary: pd.DataFrame | None = field(default=None, repr=False)
    _problems: list = field(default_factory=list, repr=False)

    def summary(self) -> pd.DataFrame:
        """One row per group centre, group spread and participant entry: mean, sd, 2.5%, 97.5%, R-hat, ESS."""
        if self._summary is None:
            rows = []
            for k, name in enumerate(self.names):
                rows.append(_row(name, "group", None, self.group[:, :, k]))
            for k, e in enumerate(self.entries):
                if e.varying:
                    rows.append(_row(f"{e.name}_tau", "spread", None, self.tau[:, :, k]))
            for j, label in enumerate(self.participants):
                for k, name in enumerate(self.names):
                    rows.append(_row(name, "participant", label, self.theta[:, :, j, k]))
            self._summary = pd.DataFrame(rows)
        return self._summary

    @property
    def converged(self) -> bool:
        """Split R-hat < 1.01 and bulk ESS >= 100 per chain on every quantity, no divergences (Vehtari et al. 2021)."""
        s = self.summary()
        chains = self.group.shape[0]
        return bool((s["r_hat"] < 1.01).all() and (s["ess_bulk"] >= 100 * chains).all() and self.divergences == 0)

    def draws(self, name: str) -> np.ndarray:
        """All draws (chains pooled) of a group centre by entry name, e.g. ``"v[WL]"``."""
        if name not in self.names:
            raise ValueError(f"no entry {name!r}; entries are {self.names}")
        return self.group[:, :, self.names.index(name)].ravel()

    def prob_greater(self, first: str, second: str | float) -> float:
        """Posterior probability that group centre ``first`` exceeds ``second`` (an entry or a number)."""
        b = self.draws(second) if isinstance(second, str) else float(second)
        return float(np.mean(self.draws(first) > b))

    def draws_table(self) -> pd.DataFrame:
        """Every draw of the group centres and spreads, one row per (chain, draw), for tests of one's own
        (e.g. ``(t["v[WW]"] > t["v[LL]"]).mean()``); spreads are named ``ENTRY_tau``."""
        chains, n = self.group.shape[:2]
        cols = {"chain": np.repeat(np.arange(chains), n), "draw": np.tile(np.arange(n), chains)}
        cols |= {name: self.group[:, :, k].ravel() for k, name in enumerate(self.names)}
        cols |= {f"{e.name}_tau": self.tau[:, :, k].ravel() for k, e in enumerate(self.entries) if e.varying}
        cols["loglik"] = self.loglik.ravel()
        return pd.DataFrame(cols)

    def group_table(self) -> pd.DataFrame:
        """The group rows of :meth:`summary` (centres and spreads)."""
        s = self.summary()
        return s[s["level"] != "participant"].drop(columns=["level", "participant"]).reset_index(drop=True)

    def predictive(self, n_draws: int = 50, seed: int = 0) -> pd.DataFrame:
        """Posterior predictive trials: for ``n_draws`` posterior draws, each participant's trials re-simulated
        with that draw's parameters (cells and trial counts as in the data). Columns: draw, ``by``, cell, rt, response."""
        from noisecraft.ddm.simulate import simulate

        rng = np.random.default_rng(seed)
        flat = self.theta.reshape(-1, *self.theta.shape[2:])
        picks = rng.choice(len(flat), size=min(n_draws, len(flat)), replace=False)
        parts = []
        for d, i in enumerate(picks):
            for j, (label, prob) in enumerate(zip(self.participants, self._problems)):
                _, tv = prob.trial_values(flat[i, j])
                lapse = None
                if np.any(tv["lapse"] > 0):
                    from noisecraft.ddm.density import Lapse

                    lapse = Lapse(float(tv["lapse"][0]), *prob.lapse_range)
                sim = simulate(prob.data.n, tv["v"], tv["a"], tv["z"], tv["t0"], tv["sv"], tv["sz"], tv["st0"],
                               s=self.spec.s, lapse=lapse, seed=rng)
                parts.append(pd.DataFrame({"draw": d, self.by: label, "cell": prob.data.levels[prob.data.cond],
                                           "rt": sim["rt"].to_numpy(), "response": sim["response"].to_numpy()}))
        return pd.concat(parts, ignore_index=True)

    def plot_predictive(self, path: str | Path, n_draws: int = 50, seed: int = 0) -> Path:
        """Data against the posterior predictive, per cell pooled over participants: RTs of upper responses
        to the right, lower ones mirrored to the left; the band is the 5-95% range over draws."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pred = self.predictive(n_draws, seed)
        data = pd.concat([pd.DataFrame({"cell": p.data.levels[p.data.cond], "rt": p.data.rt,
                                        "response": p.data.response}) for p in self._problems])
        cells = list(pd.unique(data["cell"]))
        hi = float(np.quantile(data["rt"], 0.99))
        edges = np.linspace(-hi, hi, 61)
        fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3), squeeze=False)
        for ax, cell in zip(axes[0], cells):
            d = data[data["cell"] == cell]
            signed = np.where(d["response"] == 1, d["rt"], -d["rt"])
            h_data = np.histogram(signed, edges)[0] / len(d) / np.diff(edges)
            pc = pred[pred["cell"] == cell]
            hs = []
            for _, g in pc.groupby("draw"):
                sg = np.where(g["response"] == 1, g["rt"], -g["rt"])
                hs.append(np.histogram(sg, edges)[0] / len(g) / np.diff(edges))
            lo_band, mid, hi_band = np.quantile(np.array(hs), [0.05, 0.5, 0.95], axis=0)
            x = 0.5 * (edges[1:] + edges[:-1])
            ax.fill_between(x, lo_band, hi_band, color="tab:blue", alpha=0.3, label="predictive 5-95%")
            ax.plot(x, mid, color="tab:blue", lw=1)
            ax.step(x, h_data, where="mid", color="k", lw=1, label="data")
            ax.set_title(f"{cell}" if cell is not None else "all trials")
            ax.set_xlabel("rt (s); lower responses mirrored")
        axes[0][0].set_ylabel("density")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def _row(name: str, level: str, label, x: np.ndarray) -> dict:
    """Summary of (chains, draws) draws: moments, 95% interval, split R-hat and bulk ESS (NumPyro's)."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    r_hat = float(split_gelman_rubin(x)) if x.shape[0] > 1 or x.shape[1] >= 4 else float("nan")
    ranks = _rank_normal(x)
    return {"name": name, "level": level, "participant": label, "mean": float(x.mean()), "sd": float(x.std()),
            "q2.5": float(np.quantile(x, 0.025)), "q97.5": float(np.quantile(x, 0.975)), "r_hat": r_hat,
            "ess_bulk": float(effective_sample_size(ranks))}


def _rank_normal(x: np.ndarray) -> np.ndarray:
    """Rank-normalised draws, the input of bulk ESS (Vehtari et al. 2021, eq. 14)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    r = rankdata(x.ravel()).reshape(x.shape)
    return ndtri((r - 0.375) / (x.size + 0.25))


def _inverse(transform: str, u, xp=np):
    """g^-1(u) in the array module ``xp`` (numpy, or jax.numpy inside the model)."""
    if transform == "log":
        return xp.exp(u)
    if transform == "logit":
        return 1.0 / (1.0 + xp.exp(-u))
    return u


def _loglik_op(group: _Group):
    """log L as a JAX function of theta (J, K) whose gradient is the density's analytic one."""
    import jax
    import jax.numpy as jnp

    shape = (len(group.problems), len(group.names))

    def host(theta):
        ll, g = group.loglik_grad(np.asarray(theta, dtype=float))
        return np.float64(ll), g.astype(np.float64)

    out_types = (jax.ShapeDtypeStruct((), jnp.float64), jax.ShapeDtypeStruct(shape, jnp.float64))

    @jax.custom_vjp
    def loglik(theta):
        return jax.pure_callback(host, out_types, theta)[0]

    def fwd(theta):
        ll, g = jax.pure_callback(host, out_types, theta)
        return ll, g

    def bwd(g, cotangent):
        return (cotangent * g,)

    loglik.defvjp(fwd, bwd)
    return loglik


def _model(entries: list[_Entry], n_participants: int, loglik, centred: np.ndarray):
    """The hierarchical model in NumPyro: participants' u_jk ~ N(mu_k, tau_k), sampled as such for the entries
    where ``centred`` (a mask over the varying entries) is true, and as mu_k + tau_k eta_jk with
    eta_jk ~ N(0, 1) for the others (non-centred; Papaspiliopoulos, Roberts & Skold 2007)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    loc = jnp.array([e.loc for e in entries])
    scale = jnp.array([e.scale for e in entries])
    vary = np.array([k for k, e in enumerate(entries) if e.varying], dtype=int)
    tau_scale = jnp.array([entries[k].tau for k in vary])
    c, nc = np.flatnonzero(centred), np.flatnonzero(~centred)  # positions among the varying entries

    def model():
        mu = numpyro.sample("mu", dist.Normal(loc, scale).to_event(1))
        u = jnp.broadcast_to(mu, (n_participants, len(entries)))
        if vary.size:
            tau = numpyro.sample("tau", dist.HalfNormal(tau_scale).to_event(1))
            if c.size:
                shape = (n_participants, c.size)
                u_c = numpyro.sample("u", dist.Normal(jnp.broadcast_to(mu[vary[c]], shape),
                                                      jnp.broadcast_to(tau[c], shape)).to_event(2))
                u = u.at[:, vary[c]].set(u_c)
            if nc.size:
                eta = numpyro.sample("eta", dist.Normal(0.0, 1.0).expand([n_participants, nc.size]).to_event(2))
                u = u.at[:, vary[nc]].add(tau[nc] * eta)
        theta = jnp.stack([_inverse(e.transform, u[:, k], jnp) for k, e in enumerate(entries)], axis=1)
        ll = loglik(theta)
        numpyro.deterministic("loglik", ll)
        numpyro.factor("likelihood", ll)

    return model, vary


def _ml(group: _Group, entries: list[_Entry], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-participant ML fits (as HDDM's find_starting_values) on the unbounded scale u = g(theta), (J, K),
    and their standard errors there by the delta method (inf where the Hessian gives none)."""
    theta0, se0 = [], []
    for prob in group.problems:
        res = fit(prob.data, spec=prob.spec, se=True, n_starts=2, seed=seed)
        theta0.append(res.theta)
        se0.append(res.se if res.se is not None else np.full(res.theta.shape, np.inf))
    theta0, se0 = np.array(theta0), np.nan_to_num(np.array(se0), nan=np.inf)
    lo = np.array([p.design.lower for p in group.problems])
    hi = np.array([p.design.upper for p in group.problems])
    span = hi - lo
    theta0 = np.clip(theta0, lo + 0.01 * span, hi - 0.01 * span)
    u = np.stack([_forward(e.transform, theta0[:, k]) for k, e in enumerate(entries)], axis=1)
    slope = {"log": lambda x: 1 / x, "logit": lambda x: 1 / (x * (1 - x)), "identity": lambda x: np.ones_like(x)}
    se_u = np.stack([se0[:, k] * slope[e.transform](theta0[:, k]) for k, e in enumerate(entries)], axis=1)
    return u, se_u


def _centring(u: np.ndarray, se_u: np.ndarray, vary: np.ndarray, parameterization: str) -> np.ndarray:
    """Which varying entries to sample centred. For "auto": those whose typical participant is pinned by its
    data more tightly than participants spread, median_j se_jk < tau_k (Papaspiliopoulos et al. 2007), with
    tau_k a 97.5% lower confidence bound, tau_k^2 = (J - 1) var_j(u_jk) / chi2_0.975(J - 1) - mean_j(se_jk^2):
    with few participants the spread is uncertain, and a small spread is where centred sampling diverges.
    Below MIN_CENTRED participants every entry is non-centred: the spread of so few groups is weakly
    identified and its posterior reaches zero, the funnel's neck (Gelman 2006). Measured on 4 participants
    x 100 trials (2 chains x 100 + 100): non-centred 1 divergence, centred 7, centred a only 4."""
    from scipy.stats import chi2

    if parameterization != "auto":
        return np.full(vary.size, parameterization == "centred")
    if len(u) < MIN_CENTRED:
        return np.zeros(vary.size, dtype=bool)
    se = se_u[:, vary]
    noise = np.where(np.isfinite(se), se, 0.0) ** 2
    dof = len(u) - 1
    var_lo = dof * u[:, vary].var(0, ddof=1) / chi2.ppf(0.975, dof)
    return np.median(se, axis=0) < np.sqrt(np.maximum(var_lo - noise.mean(0), 0.0))


def _start(group: _Group, entries: list[_Entry], vary: np.ndarray, centred: np.ndarray, u: np.ndarray,
           chains: int, seed: int) -> dict:
    """Starting values per chain: participants at their ML fits ``u``, group centres at their mean, jittered."""
    mu = u.mean(0)
    tau = np.maximum(u[:, vary].std(0), 0.05) if vary.size else None
    rng = np.random.default_rng(seed)
    inits = {"mu": [], "tau": [], "u": [], "eta": []}
    for _ in range(chains):
        for jitter in (0.1, 0.03, 0.0):
            m = mu + jitter * rng.standard_normal(mu.shape)
            # participant values stay at their ML fits; group-only entries take the group value
            eta = (u[:, vary] - m[vary]) / tau if vary.size else None
            uu = np.broadcast_to(m, u.shape).copy()
            if vary.size:
                uu[:, vary] = m[vary] + tau * eta
            th = np.stack([_inverse(e.transform, uu[:, k]) for k, e in enumerate(entries)], axis=1)
            if np.isfinite(group.loglik_grad(th)[0]):
                break
        inits["mu"].append(m)
        if vary.size:  # NUTS takes starting points on its unconstrained scale: log tau
            inits["tau"].append(np.log(tau))
            if centred.any():
                inits["u"].append(uu[:, vary[centred]])
            if not centred.all():
                inits["eta"].append(eta[:, ~centred])
    return {k: np.array(v) for k, v in inits.items() if v}


def bayes(
    data: pd.DataFrame,
    spec: ModelSpec | str | dict | None = None,
    *,
    by: str = "subj_idx",
    draws: int = 1000,
    warmup: int = 1000,
    chains: int = 2,
    seed: int = 0,
    target_accept: float = 0.8,
    group_only: str | Sequence[str] = "slopes",
    priors: dict | None = None,
    parameterization: str = PARAMETERIZATION,
    progress: bool = False,
    **options,
) -> BayesResult:
    """Sample the hierarchical DDM of ``spec`` over the participants in column ``by`` with NUTS.

    ``options`` are :func:`~noisecraft.ddm.fit.fit`'s data options (rt, response, condition, rt_min,
    rt_max, coding, stimulus, upper, stimulus_upper). ``group_only``: "slopes" (default: regression
    slopes are group-level only), "none", or entry/parameter names. ``priors`` replaces rows of
    :data:`PRIORS`. ``parameterization``: "auto" (default, see :data:`PARAMETERIZATION`),
    "centred" or "non-centred". Every participant's data and design are checked before any sampling.
    """
    unknown = sorted(set(options) - set(_DATA_OPTIONS))
    if unknown:
        raise ValueError(f"bayes got unknown option(s) {unknown}; expected some of {sorted(_DATA_OPTIONS)}")
    for name, value, lo in (("draws", draws, 1), ("warmup", warmup, 1), ("chains", chains, 1)):
        if int(value) != value or value < lo:
            raise ValueError(f"{name}={value!r}; expected an integer >= {lo}")
    if parameterization not in ("auto", "centred", "non-centred"):
        raise ValueError(f"parameterization={parameterization!r}; expected 'auto', 'centred' or 'non-centred'")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept={target_accept!r}; expected a number in (0, 1)")
    if by not in data.columns:
        raise ValueError(f"by={by!r} is not a column of the data; columns are {list(data.columns)}")
    if data[by].isna().any():
        raise ValueError(f"column {by!r} has missing values; every trial needs a participant")
    spec = _spec(spec)
    spec.check_columns(data.columns)
    defaults = fit_defaults()
    opts = {k: options.get(k, defaults[k]) for k in _DATA_OPTIONS}
    labels, problems = [], []
    for label, sub in data.groupby(by, sort=True):
        try:
            problems.append(_setup(sub, spec, "ml", opts))
        except ValueError as err:
            raise ValueError(f"{by}={_fmt(label)}: {err}") from None
        labels.append(label)
    if len(labels) < 2:
        raise ValueError(f"column {by!r} has {len(labels)} participant(s); a hierarchical model needs at least 2 "
                         "(use noisecraft.ddm.fit for one)")
    group = _Group(labels, problems, by)
    design = problems[0].design
    entries = _entries(design.names, design.kinds, design.slices, spec, dict(priors or {}), group_only)
    return _sample(group, entries, spec, by, draws, warmup, chains, seed, target_accept, progress, parameterization)


def _sample(group: _Group, entries: list[_Entry], spec: ModelSpec, by: str, draws: int, warmup: int,
            chains: int, seed: int, target_accept: float, progress: bool, parameterization: str) -> BayesResult:
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS, init_to_value

    numpyro.enable_x64()
    t_start = time.perf_counter()
    u_ml, se_ml = _ml(group, entries, seed)
    vary = np.array([k for k, e in enumerate(entries) if e.varying], dtype=int)
    centred = _centring(u_ml, se_ml, vary, parameterization)
    model, _ = _model(entries, len(group.labels), _loglik_op(group), centred)
    inits = _start(group, entries, vary, centred, u_ml, chains, seed)
    # NumPyro validates its init strategy even when init_params are given; its default (uniform on
    # [-2, 2] unconstrained) can put t0 above the fastest trial for every try, so it starts at the first
    # chain's values too
    first = {k: v[0] for k, v in inits.items()}
    if "tau" in first:
        first["tau"] = np.exp(first["tau"])
    kernel = NUTS(model, target_accept_prob=target_accept, init_strategy=init_to_value(values=first))
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws,
                num_chains=chains, chain_method="sequential", progress_bar=progress)
    mcmc.run(jax.random.PRNGKey(seed), init_params=inits if chains > 1 else {k: v[0] for k, v in inits.items()})
    s = mcmc.get_samples(group_by_chain=True)
    mu = np.asarray(s["mu"])
    u = np.broadcast_to(mu[:, :, None, :], (*mu.shape[:2], len(group.labels), mu.shape[-1])).copy()
    tau = np.zeros_like(mu)
    if vary.size:
        tau[:, :, vary] = np.asarray(s["tau"])
        if centred.any():
            u[:, :, :, vary[centred]] = np.asarray(s["u"])
        if not centred.all():
            u[:, :, :, vary[~centred]] += np.asarray(s["tau"])[:, :, None, ~centred] * np.asarray(s["eta"])
    theta = np.stack([_inverse(e.transform, u[..., k]) for k, e in enumerate(entries)], axis=-1)
    centre = np.stack([_inverse(e.transform, mu[..., k]) for k, e in enumerate(entries)], axis=-1)
    loglik = np.asarray(s["loglik"])
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    # DIC (Spiegelhalter et al. 2002) with p_D = mean deviance - deviance at the posterior mean, as HDDM reports
    mean_dev = float(-2 * loglik.mean())
    dev_at_mean = -2 * group.loglik_grad(theta.reshape(-1, *theta.shape[2:]).mean(0))[0]
    p_dic = mean_dev - dev_at_mean
    result = BayesResult(spec, by, list(group.labels), list(group.names), entries, centre, tau, theta, loglik,
                         divergences, time.perf_counter() - t_start, sum(p.data.n for p in group.problems),
                         dic=mean_dev + p_dic, p_dic=p_dic,
                         centred=tuple(entries[k].name for k in vary[centred]))
    result._problems = group.problems
    return result

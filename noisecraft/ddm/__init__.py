"""The drift-diffusion model of two-choice decisions (Ratcliff 1978), self-contained in numpy/scipy.

Ratcliff, R. (1978). A theory of memory retrieval. Psychological Review 85:59-108.

* :mod:`~noisecraft.ddm.density`: exact first-passage density, log-density and CDF
  (Navarro & Fuss 2009), the full model (v, a, z, t0, sv, sz, st0) and a lapse mixture.
* :mod:`~noisecraft.ddm.simulate`: exact and Euler/Brownian-bridge samplers, one block per condition.
* :mod:`~noisecraft.ddm.ez`: EZ-diffusion (Wagenmakers et al. 2007).
* :mod:`~noisecraft.ddm.fit`: maximum likelihood, quantile chi-square / G^2
  (Ratcliff & Tuerlinckx 2002) and EZ, with conditions declared in a :class:`ModelSpec`
  (one condition column, or several factors per parameter: :mod:`~noisecraft.ddm.design`),
  accuracy or stimulus coding, and per-participant fits (:func:`fit_participants`).
* :mod:`~noisecraft.ddm.recovery`, :mod:`~noisecraft.ddm.report`: parameter recovery
  and the side-by-side method comparison.
* :mod:`~noisecraft.ddm.reliability`: how much to trust a fit: stratified bootstrap intervals,
  split-half reliability, sensitivity to starting values.
* :mod:`~noisecraft.ddm.bayes`: hierarchical Bayesian estimation (group and participant parameters, the
  exact density as the likelihood) sampled by NumPyro's NUTS; imported on use (``from noisecraft.ddm.bayes
  import bayes``), since NumPyro and JAX are the optional ``bayes`` extra.
"""

from __future__ import annotations

from noisecraft.ddm.data import RTData, load_cavanagh, load_roitman, prepare, read_trials
from noisecraft.ddm.density import Lapse, cdf, logpdf, pdf, prob_upper, wiener_cdf, wiener_logpdf
from noisecraft.ddm.ez import EZResult, ez, ez_from_data
from noisecraft.ddm.fit import FitResult, fit, fit_participants, negloglik
from noisecraft.ddm.reliability import bootstrap, split_half, start_sensitivity
from noisecraft.ddm.simulate import simulate, simulate_conditions
from noisecraft.ddm.spec import ModelSpec, Rule

__all__ = [
    "EZResult",
    "FitResult",
    "Lapse",
    "ModelSpec",
    "RTData",
    "Rule",
    "bootstrap",
    "cdf",
    "ez",
    "ez_from_data",
    "fit",
    "fit_participants",
    "load_cavanagh",
    "load_roitman",
    "logpdf",
    "negloglik",
    "pdf",
    "prepare",
    "prob_upper",
    "read_trials",
    "simulate",
    "simulate_conditions",
    "split_half",
    "start_sensitivity",
    "wiener_cdf",
    "wiener_logpdf",
]

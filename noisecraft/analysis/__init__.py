"""The analysis layer: exact likelihood through the PF-ODE, the ELBO, diagnostics, and the analytic oracle
(Gaussian mixtures with exact denoisers) every solver and estimator is tested against."""

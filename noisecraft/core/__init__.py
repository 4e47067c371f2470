"""The core layer: x_t = alpha(t) x_0 + sigma(t) eps and everything that follows from it alone.

Schedules, the forward process, the reverse-time process (probability-flow ODE and reverse SDE),
parameterizations, the denoiser contract, losses, time grids, per-sample noise and x0 bounds. It knows no
network, no file and no solver; every other layer builds on it (docs/architecture.md).
"""

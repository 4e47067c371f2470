"""Diffusion for 1-D signals (ECG): windows and resampling, ECGSYN training data and the pyhrv test recording,
stress-test noise, the 1-D operators, two denoisers (a conditional model and a prior with posterior sampling),
gap filling, and the metrics. See docs/signals.md."""

"""The restoration tasks of a run's pipeline and the methods each offers, by name.

Names only, with no torch behind them: the command line lists them in its help without loading the
pipeline (noisecraft.runs.pipeline checks them and runs them).
"""

from __future__ import annotations

INPAINT_METHODS = ("repaint", "replacement", "dps", "mmps")
UPSCALE_METHODS = ("ddnm", "dps", "mmps")
DENOISE_METHODS = ("posterior", "mmps", "ddnm")
RESTORE_METHODS = ("ddnm", "dps", "mmps")

"""Import hygiene: the drift-diffusion module runs without torch; the public API resolves lazily."""

from __future__ import annotations

import subprocess
import sys


def test_ddm_does_not_load_torch():
    code = "import sys, noisecraft.ddm; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_public_names_resolve():
    import noisecraft as nc

    for name in nc.__all__:
        assert getattr(nc, name) is not None

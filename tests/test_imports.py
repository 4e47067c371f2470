"""Import hygiene: the drift-diffusion module and the command line load without torch; the public API resolves lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["noisecraft.ddm", "noisecraft.cli"])
def test_module_does_not_load_torch(module):
    """The DDM needs no torch, and neither does loading the command line (each command imports what it runs):
    `noisecraft ddm fit` would otherwise pay about 2 s of start-up for torch."""
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_public_names_resolve():
    import noisecraft as nc

    for name in nc.__all__:
        assert getattr(nc, name) is not None

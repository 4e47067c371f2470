"""Every code block of the README runs as written: the Python examples in one namespace, the shell examples
line by line from a directory laid out like the repository (its data files linked in), with the installed
`noisecraft` command. The first block, `make demo` / `make test`, is what CI itself runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert any("make demo" in line for line in head) and any("make test" in line for line in head)


def test_python_examples_run(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert blocks, "README has no python examples"
    monkeypatch.chdir(tmp_path)  # runs/ written by the examples goes here
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["x"].shape == (16, 2) and namespace["info"].nfe == 10
    assert abs(namespace["nll"] - float(-namespace["mix16"].log_prob(namespace["data"]).mean())) < 4 * namespace["stderr"]
    assert namespace["images"].shape == (16, 1, 8, 8) and namespace["filled"].shape == (4, 1, 8, 8)


@pytest.mark.slow
def test_shell_examples_run(tmp_path):
    blocks = _blocks("bash")
    assert "make demo" in blocks[0] and "make test" in blocks[0]
    commands = [line for block in blocks[1:] for line in block.splitlines() if line.strip()]
    assert commands, "README has no shell examples beyond the set-up block"
    os.symlink(ROOT / "noisecraft", tmp_path / "noisecraft")  # the data files the examples name
    exe = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{exe}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert shutil.which("noisecraft", path=env["PATH"]), "the noisecraft command is not installed"
    for line in commands:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"

"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert any("make demo" in line for line in head) and any("make test" in line for line in head)


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["x"].shape == (16, 2) and namespace["info"].nfe == 10
    assert abs(namespace["nll"] - float(-namespace["mix16"].log_prob(namespace["data"]).mean())) < 4 * namespace["stderr"]

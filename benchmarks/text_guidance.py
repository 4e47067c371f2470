"""Text-conditioned digits: does a prompt give the digit it names? Prints a markdown table, optionally
appends it to --out, and writes a PNG of samples per prompt.

A text-conditioned run (model.cond = "text") is sampled for each prompt at several classifier-free
guidance scales w (Ho & Salimans 2022; null = the zero embedding); the shipped digits classifier
(noisecraft.metrics.digits) labels the samples and the table gives the share in the prompted digit.
Prompts include the training templates and paraphrases the run never saw. A class-conditional run
(--class-run) adds the nearest-class routing of the same prompts for comparison.

    python benchmarks/text_guidance.py --run runs/digits-text --class-run runs/digits-cond \
        --out docs/benchmarks/guidance.md --png docs/figures/text_prompts.png
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch

PROMPTS: tuple[tuple[str, int, bool], ...] = (  # (prompt, digit, one of the training templates)
    ("a handwritten seven", 7, True),
    ("the digit 3", 3, True),
    ("number five", 5, True),
    ("handwritten 7", 7, False),
    ("seven", 7, False),
    ("a 2 written by hand", 2, False),
    ("draw an eight", 8, False),
    ("zero", 0, False),
    # harder: arithmetic, order and numerals that a sentence embedding may not resolve
    ("the number after six", 7, False),
    ("three plus two", 5, False),
    ("VII", 7, False),
)
SCALES = (0.0, 1.0, 2.0, 3.0)


def _draw(denoise, run, n: int, seed: int) -> torch.Tensor:
    from noisecraft.solvers import sample

    with torch.no_grad():
        return sample(denoise, run.schedule, "dpm++2m", 20, (n, *run.sample_shape),
                      generator=torch.Generator().manual_seed(seed)).float()


def main() -> None:
    from noisecraft.guide.text import embed, prompt_to_class
    from noisecraft.metrics.digits import features_and_classes
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.steer import class_denoiser, text_denoiser
    from noisecraft.viz.plots import save_image_grids

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--class-run", default=None)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    if not run.config.model.text:
        raise SystemExit(f"{args.run!r} is not a text-conditioned run (model.cond = 'text')")
    class_run = load_run(args.class_run) if args.class_run else None
    start = time.perf_counter()
    rows, panels = [], []
    for i, (prompt, digit, seen) in enumerate(PROMPTS):
        emb = embed([prompt])
        accs = []
        for w in SCALES:
            x = _draw(text_denoiser(run, emb, w), run, args.n, seed=i)
            accs.append(float((features_and_classes(x)[1] == digit).mean()))
            if w == 2.0:
                panels.append((prompt, x[:36].numpy()))
        routed = ""
        if class_run is not None:
            try:
                label, _ = prompt_to_class(prompt)
            except ValueError:  # near no class
                routed = "none / -"
            else:
                x = _draw(class_denoiser(class_run, label, 2.0), class_run, args.n, seed=i)
                routed = f"{label} / {float((features_and_classes(x)[1] == digit).mean()):.2f}"
        rows.append((prompt, digit, seen, accs, routed))
    seconds = time.perf_counter() - start
    mean = np.mean([r[3] for r in rows], axis=0)
    info = run.config.train
    lines = [
        "", "## Digits: text prompts as conditioning (sentence embedding, model.cond = \"text\")", "",
        f"{datetime.date.today()}, {platform.machine()} CPU, {args.threads} thread(s), torch {torch.__version__}; "
        f"run `{args.run}` ({run.step} steps, batch {info.batch_size}, {info.minutes} min {info.clock} clock, "
        f"label dropout {run.config.model.label_dropout}, null = zero embedding). {args.n} samples per prompt and "
        f"scale, dpm++2m 20 steps, x0 clipped to [-1, 1]; agreement = share the shipped digits classifier puts in "
        f"the prompted digit (10% is chance). Templates: trained prompt templates; the others are paraphrases."
        + (f" Last column: the same prompt routed to its nearest class on `{args.class_run}` (CFG w = 2): "
           "class / agreement." if class_run else "") + f" {seconds:.0f} s in all.", "",
        "| prompt | digit | template? | " + " | ".join(f"w = {w:g}" for w in SCALES)
        + (" | nearest class, class run w = 2 |" if class_run else " |"),
        "|---|---|---|" + "---|" * len(SCALES) + ("---|" if class_run else ""),
    ]
    for prompt, digit, seen, accs, routed in rows:
        lines.append(f"| {prompt} | {digit} | {'yes' if seen else 'no'} | " + " | ".join(f"{a:.2f}" for a in accs)
                     + (f" | {routed} |" if class_run else " |"))
    lines.append("| mean | | | " + " | ".join(f"{a:.2f}" for a in mean) + (" | |" if class_run else " |"))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)
    if args.png:
        save_image_grids(args.png, panels, scale=0.08)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()

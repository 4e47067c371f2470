"""`noisecraft ddm ...` commands: fit, simulate, compare, reliability (the drift-diffusion model, Ratcliff 1978)."""

from __future__ import annotations

from typing import Annotated

import typer

from noisecraft.cli._common import user_errors
from noisecraft.io import write_csv_atomic

app = typer.Typer(no_args_is_help=True, add_completion=False)

_DATA_HELP = "CSV file, or 'roitman' / 'cavanagh' for the shipped data sets."

# Options every command that reads trials shares, declared once (typer reads the Annotated metadata).
Rt = Annotated[str, typer.Option(help="RT column (seconds).")]
Response = Annotated[str, typer.Option(help="Response column: 1 = upper boundary (e.g. correct), 0 = lower.")]
Condition = Annotated[str | None, typer.Option(help="Condition column (e.g. coh).")]
Coding = Annotated[str, typer.Option(help="accuracy (upper = correct) | stimulus (upper = one response; needs --stimulus).")]
Stimulus = Annotated[str | None, typer.Option(help="Stimulus column for --coding stimulus: the drift is +v for --stimulus-upper, -v for the other.")]
Upper = Annotated[str | None, typer.Option(help="Response value at the upper boundary (default: the response column is 0/1, 1 = upper).")]
StimulusUpper = Annotated[str | None, typer.Option(help="Stimulus whose correct response is the upper boundary (default: --upper, or 1).")]
RtMin = Annotated[float | None, typer.Option(help="Drop trials with rt <= rt_min.")]
RtMax = Annotated[float | None, typer.Option(help="Drop trials with rt >= rt_max.")]
Lapse = Annotated[float | None, typer.Option(help="Fixed contaminant probability (overrides the spec).")]
LapseRange = Annotated[str | None, typer.Option(help="Contaminant RT range lo:hi in s (default 0:max rt).")]
NoiseS = Annotated[float | None, typer.Option(help="Within-trial noise (1 default; 0.1 is Ratcliff's convention).")]
Where = Annotated[str | None, typer.Option(help="Rows to keep: 'column OP value' clauses joined by 'and', e.g. 'monkey == 1 and coh >= 0.128'.")]


def _floats(text: str, sep: str, what: str, example: str, count: int | None = None) -> list[float]:
    """Option text like "0.5,1" (sep ",") or "0:2" (sep ":") as floats, `count` of them if given."""
    try:
        values = [float(x) for x in text.split(sep)]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count):
        raise ValueError(
            f"`{what}` expects numbers separated by {sep!r} like {example}, got {text!r}"
        )
    return values


@app.command("fit")
def fit_cmd(
    data: str = typer.Argument(..., help=_DATA_HELP),
    rt: Rt = "rt",
    response: Response = "response",
    condition: Condition = None,
    method: str = typer.Option("ml", help="ml | chisq | ez"),
    spec: str = typer.Option(
        None,
        help="Spec text like 'v=linear, a=shared, t0=shared, z=0.5' (over --condition) or "
        "'v ~ strength, a ~ instruction, t0 ~ instruction' (over the named columns), or a .json/.yaml file.",
    ),
    coding: Coding = "accuracy",
    stimulus: Stimulus = None,
    upper: Upper = None,
    stimulus_upper: StimulusUpper = None,
    by: str = typer.Option(
        None, help="Fit each value of this column separately (e.g. subj_idx); prints and writes one table."
    ),
    rt_min: RtMin = None,
    rt_max: RtMax = None,
    lapse: Lapse = None,
    lapse_range: LapseRange = None,
    s: NoiseS = None,
    statistic: str = typer.Option("chisq", help="For --method chisq: chisq | g2."),
    where: Where = None,
    out: str = typer.Option(None, help="Also write the parameter table to this CSV."),
) -> None:
    """Fit the DDM and print a parameter table (one per --by group, in one long table)."""
    from noisecraft.ddm.data import read_trials
    from noisecraft.ddm.fit import fit, fit_participants
    from noisecraft.ddm.spec import ModelSpec
    from noisecraft.io import check_output

    with user_errors():
        table_path = check_output(out, (".csv",)) if out else None
        options = {
            "rt": rt,
            "response": response,
            "condition": condition,
            "method": method,
            "rt_min": rt_min,
            "rt_max": rt_max,
            "statistic": statistic,
            "coding": coding,
            "stimulus": stimulus,
            "upper": upper,
            "stimulus_upper": stimulus_upper,
        }
        trials = read_trials(data, where)
        model = ModelSpec.from_options(spec, lapse, lapse_range, s)
        if by:
            table = fit_participants(trials, model, by=by, **options)
        else:
            res = fit(trials, spec=model, **options)
    if by:
        typer.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        if table_path is not None:
            with user_errors():
                table_path.parent.mkdir(parents=True, exist_ok=True)
                write_csv_atomic(table, table_path)
        return
    typer.echo(res.summary())
    if res.ez_per_condition is not None:
        typer.echo("\nEZ per condition:\n" + res.ez_per_condition.to_string(index=False))
    if table_path is not None:
        with user_errors():
            table_path.parent.mkdir(parents=True, exist_ok=True)
            write_csv_atomic(res.table(), table_path)


@app.command("simulate")
def simulate_cmd(
    out: str = typer.Option("ddm_sim.csv", help="Output CSV."),
    n: int = typer.Option(500, help="Trials per condition."),
    v: float = typer.Option(1.0, help="Drift (or drift per unit condition with --conditions)."),
    a: float = typer.Option(1.0, help="Boundary separation."),
    z: float = typer.Option(0.5, help="Relative start point."),
    t0: float = typer.Option(0.3, help="Non-decision time (s)."),
    sv: float = typer.Option(0.0, help="Across-trial drift SD."),
    sz: float = typer.Option(0.0, help="Across-trial start-point range (relative)."),
    st0: float = typer.Option(0.0, help="Across-trial non-decision-time range (s)."),
    s: float = typer.Option(1.0, help="Within-trial noise."),
    conditions: str = typer.Option(
        None, help="Comma-separated condition values c; drift = v * c in each."
    ),
    lapse: float = typer.Option(0.0, help="Contaminant probability."),
    lapse_range: str = typer.Option("0:2", help="Contaminant RT range lo:hi (s)."),
    method: str = typer.Option("exact", help="exact | euler"),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Simulate trials and write a CSV (columns rt, response[, condition], contaminant)."""
    from noisecraft.ddm.simulate import simulate_conditions
    from noisecraft.io import check_output

    with user_errors():
        out = check_output(out, (".csv",))
        lo, hi = _floats(lapse_range, ":", "lapse_range", "0:2", count=2)
        levels = _floats(conditions, ",", "conditions", "0.5,1") if conditions else None
        df = simulate_conditions(
            n,
            v,
            a,
            z,
            t0,
            sv,
            sz,
            st0,
            s=s,
            conditions=levels,
            lapse=lapse,
            lapse_range=(lo, hi),
            method=method,
            seed=seed,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(df, out)
    typer.echo(f"wrote {len(df)} trials to {out}")


@app.command("compare")
def compare_cmd(
    data: str = typer.Argument(..., help=_DATA_HELP),
    out: str = typer.Option("runs/ddm_compare", help="Output directory for report.md and PNGs."),
    rt: Rt = "rt",
    response: Response = "response",
    condition: Condition = None,
    spec: str = typer.Option(None, help="Spec text or file (see `fit`)."),
    rt_min: RtMin = None,
    rt_max: RtMax = None,
    lapse: Lapse = None,
    lapse_range: LapseRange = None,
    s: NoiseS = None,
    where: Where = None,
    coding: Coding = "accuracy",
    stimulus: Stimulus = None,
    upper: Upper = None,
    stimulus_upper: StimulusUpper = None,
    n_recovery: int = typer.Option(
        20, help="Simulated data sets in the recovery panel (0 to skip)."
    ),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Fit by ML (full distribution), quantile chi-square and EZ (summary statistics); write a report with plots.

    Takes the multi-factor specs of `fit` ('v ~ stim, a ~ conf') and stimulus coding."""
    from noisecraft.ddm.data import read_trials
    from noisecraft.ddm.report import compare
    from noisecraft.ddm.spec import ModelSpec
    from noisecraft.io import check_output_folder

    with user_errors():
        check_output_folder(out)
        path = compare(
            read_trials(data, where),
            out,
            rt=rt,
            response=response,
            condition=condition,
            spec=ModelSpec.from_options(spec, lapse, lapse_range, s),
            rt_min=rt_min,
            rt_max=rt_max,
            coding=coding,
            stimulus=stimulus,
            upper=upper,
            stimulus_upper=stimulus_upper,
            n_recovery=n_recovery,
            seed=seed,
        )
    typer.echo(f"wrote {path}")


@app.command("reliability")
def reliability_cmd(
    data: str = typer.Argument(..., help=_DATA_HELP),
    spec: str = typer.Option(None, help="Spec text or file (see `fit`)."),
    by: str = typer.Option(None, help="Participant column (e.g. subj_idx): bootstrap and starts per participant; needed by --split-half."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Bootstrap resamples per fit (0: skip)."),
    level: float = typer.Option(0.95, help="Confidence level of the bootstrap intervals."),
    split_half: bool = typer.Option(False, "--split-half", help="Split-half reliability across --by participants."),
    split: str = typer.Option("odd-even", help="odd-even | random: how trials are split within each cell."),
    session: str = typer.Option(None, help="Session column with two levels: test-retest instead of split halves."),
    starts: int = typer.Option(0, "--starts", help="Random single starts for the starting-value study (0: skip)."),
    rt: Rt = "rt",
    response: Response = "response",
    condition: Condition = None,
    coding: Coding = "accuracy",
    stimulus: Stimulus = None,
    rt_min: RtMin = None,
    rt_max: RtMax = None,
    lapse: Lapse = None,
    lapse_range: LapseRange = None,
    s: NoiseS = None,
    where: Where = None,
    seed: int = typer.Option(0, help="Random seed."),
    out: str = typer.Option(None, help="Write the tables to this .md report or .csv (one long table, column 'table')."),
) -> None:
    """How much to trust a fit: bootstrap intervals, split-half reliability, starting-value sensitivity."""
    from noisecraft.ddm import reliability as rel
    from noisecraft.ddm.data import read_trials
    from noisecraft.ddm.spec import ModelSpec
    from noisecraft.io import check_output, write_text_atomic

    with user_errors():
        path = check_output(out, (".md", ".csv")) if out else None
        if not (bootstrap or split_half or session or starts):
            raise ValueError("nothing to do: give --bootstrap N, --split-half (or --session) and/or --starts N")
        if split_half and not by:
            raise ValueError("--split-half needs --by <participant column>")
        options = {"rt": rt, "response": response, "condition": condition, "coding": coding,
                   "stimulus": stimulus, "rt_min": rt_min, "rt_max": rt_max}
        trials = read_trials(data, where)
        model = ModelSpec.from_options(spec, lapse, lapse_range, s)
        boot = (rel.bootstrap(trials, model, n_boot=bootstrap, level=level, by=by, seed=seed, **options)
                if bootstrap else None)
        halves = (rel.split_half(trials, model, by=by, split=split, session=session, seed=seed, **options)
                  if split_half or session else None)
        sens = rel.start_sensitivity(trials, model, n_starts=starts, by=by, seed=seed, **options) if starts else None
    fmt = {"float_format": lambda x: f"{x:.4f}", "index": False}
    if boot is not None:
        typer.echo(f"Bootstrap ({bootstrap} resamples, {level:.0%} percentile intervals)\n" + boot.to_string(**fmt))
    if halves is not None:
        typer.echo(f"\nSplit-half reliability ({halves.split})\n" + halves.table.to_string(**fmt))
    if sens is not None:
        typer.echo(f"\nStarting values: {sens.summary()}\n" + sens.fits.to_string(**fmt) + "\n"
                   + sens.table.to_string(**fmt))
    if path is None:
        return
    with user_errors():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md":
            write_text_atomic(path, rel.markdown(boot, halves, sens))
        else:
            write_csv_atomic(rel.long_table(boot, halves, sens), path)
    typer.echo(f"wrote {path}")


@app.command("bayes")
def bayes_cmd(
    data: str = typer.Argument(..., help=_DATA_HELP),
    spec: str = typer.Option(None, help="Spec text or file (see `fit`), e.g. 'v ~ stim, a=shared, t0=shared, z=0.5'."),
    by: str = typer.Option("subj_idx", help="Participant column."),
    draws: int = typer.Option(1000, help="Posterior draws per chain."),
    warmup: int = typer.Option(1000, help="Warm-up (adaptation) iterations per chain."),
    chains: int = typer.Option(2, help="Chains (run one after another; R-hat needs at least 2)."),
    target_accept: float = typer.Option(0.8, help="NUTS target acceptance probability (raise it if there are divergences)."),
    group_only: str = typer.Option("slopes", help="slopes | none | comma-separated entry names shared by all participants."),
    rt: Rt = "rt",
    response: Response = "response",
    condition: Condition = None,
    coding: Coding = "accuracy",
    stimulus: Stimulus = None,
    rt_min: RtMin = None,
    rt_max: RtMax = None,
    lapse: Lapse = None,
    lapse_range: LapseRange = None,
    s: NoiseS = None,
    where: Where = None,
    seed: int = typer.Option(0, help="Random seed."),
    out: str = typer.Option("runs/ddm_bayes", help="Output directory: summary.csv, draws.csv, predictive.png."),
    progress: bool = typer.Option(True, help="Show NumPyro's progress bar."),
) -> None:
    """Hierarchical Bayesian DDM (group and participant parameters) sampled by NumPyro's NUTS, with R-hat,
    ESS, divergences, DIC and a posterior predictive plot."""
    from pathlib import Path

    from noisecraft.ddm.data import read_trials
    from noisecraft.ddm.spec import ModelSpec

    with user_errors():
        try:
            from noisecraft.ddm.bayes import bayes
        except ImportError as err:
            raise ValueError(f"`ddm bayes` needs NumPyro ({err}); install it with pip install 'noisecraft[bayes]'")
        folder = Path(out)
        options = {"rt": rt, "response": response, "condition": condition, "coding": coding,
                   "stimulus": stimulus, "rt_min": rt_min, "rt_max": rt_max}
        shared = group_only if group_only in ("slopes", "none") else [x.strip() for x in group_only.split(",")]
        trials = read_trials(data, where)
        model = ModelSpec.from_options(spec, lapse, lapse_range, s)
        result = bayes(trials, model, by=by, draws=draws, warmup=warmup, chains=chains, seed=seed,
                       target_accept=target_accept, group_only=shared, progress=progress, **options)
        summary = result.summary()
        folder.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(summary, folder / "summary.csv")
        write_csv_atomic(result.draws_table(), folder / "draws.csv")
        png = result.plot_predictive(folder / "predictive.png")
    fmt = {"float_format": lambda x: f"{x:.4f}", "index": False}
    typer.echo(result.group_table().to_string(**fmt))
    typer.echo(f"\n{len(result.participants)} participants, {result.n_trials} trials, {chains} chain(s) x {draws} draws "
               f"in {result.time_s:.0f} s; max R-hat {summary['r_hat'].max():.3f}, min bulk ESS "
               f"{summary['ess_bulk'].min():.0f}, {result.divergences} divergence(s); DIC {result.dic:.2f} "
               f"(pD {result.p_dic:.1f})")
    if not result.converged:
        typer.echo("warning: not converged by the usual rule (R-hat < 1.01, bulk ESS >= 100 per chain, no divergences); "
                   "run more --draws/--warmup or raise --target-accept", err=True)
    typer.echo(f"wrote {folder / 'summary.csv'}, {folder / 'draws.csv'}, {png}")

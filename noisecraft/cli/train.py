"""Bodies of the `noisecraft train`, `sample` and `eval` commands: argument checks at the boundary, then
the library calls, with errors shown as one line naming the bad value."""

from __future__ import annotations

from pathlib import Path

import typer


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def train_command(data: str, preset: str, loss: str | None, config: str | None, run: str | None,
                  minutes: float | None, steps: int | None, batch_size: int | None, lr: float | None,
                  seed: int | None, resume: bool) -> None:
    from noisecraft.core.losses import preset as loss_preset
    from noisecraft.runs.config import config_from_dict, load_config, preset_config
    from noisecraft.runs.train import train

    try:
        if resume:
            if run is None:
                raise ValueError("--resume needs --run RUN_DIR, the run to continue")
            cfg = None
        else:
            overrides = dict(minutes=minutes, max_steps=steps, batch_size=batch_size, lr=lr, seed=seed)
            if config is not None:
                cfg = load_config(config)
                train_over = {k: v for k, v in overrides.items() if v is not None}
                if minutes is not None and steps is None:
                    train_over["max_steps"] = None
                raw = cfg.model_dump()
                raw["train"].update(train_over)
                if loss is not None:
                    raw["loss"] = loss_preset(loss).model_dump()
                cfg = config_from_dict(raw, source=config)
            else:
                cfg = preset_config(data, preset, **overrides)
                if loss is not None:
                    cfg = config_from_dict({**cfg.model_dump(), "loss": loss_preset(loss).model_dump()})
            name = Path(data).stem if not Path(data).is_dir() else Path(data).name
            run = run or f"runs/{name}-{loss or preset}"
        result = train(cfg, run, resume=resume)
    except ValueError as err:
        _fail(err)
        return
    typer.echo(f"trained {result.step} steps, loss {result.loss:.4f}, {result.images_per_s:.0f} images/s")
    typer.echo(f"run directory: {result.run_dir}  (checkpoint {result.checkpoint}, metrics.jsonl)")


def sample_command(run: str, solver: str, steps: int, n: int, seed: int, out: str | None, ema: bool,
                   threshold: float | None = None) -> None:
    from noisecraft.runs.pipeline import draw, load_run, with_threshold, write_samples

    try:
        loaded = with_threshold(load_run(run, ema=ema), threshold)
        x = draw(loaded, n, solver, steps, seed, progress=True)
        reference = _reference(loaded)
        outs = [Path(out)] if out else [Path(run) / "samples.png", Path(run) / "samples.npy"]
        for path in outs:
            write_samples(x, path, loaded.is_image, reference)
    except ValueError as err:
        _fail(err)
        return
    typer.echo("wrote " + ", ".join(str(p) for p in outs))


def _reference(loaded) -> object | None:
    try:
        return loaded.config.data.load().x.numpy()
    except ValueError:
        return None


def eval_command(run: str, n: int, solver: str, steps: int, seed: int) -> None:
    from noisecraft.runs.evaluate import evaluate_run, format_result

    try:
        result = evaluate_run(run, n, solver, steps, seed)
    except ValueError as err:
        _fail(err)
        return
    typer.echo(f"{solver}, {steps} steps, {n} samples: {format_result(result)}")
    typer.echo(f"wrote {Path(run) / 'eval.json'}")

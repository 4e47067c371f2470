"""`noisecraft finetune`: parse the options, call noisecraft.hf.lora.finetune (LoRA through peft, or every weight
with --full), print what trained and where the adapter or run went."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()


def parse_classes(text: str | None, what: str = "classes") -> list[int] | None:
    """'5-9' or '0,2,4' (or both: '0-2,7') as a list of integers (class labels, levels)."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            out += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ValueError(f"`{what}` {text!r} is not a list of integers; expected e.g. 5-9 or 0,2,4") from None
    if not out:
        raise ValueError(f"`{what}` {text!r} names none; expected e.g. 5-9 or 0,2,4")
    return out


@app.command()
def finetune(
    run: str = typer.Argument(..., help="The base: a trained run directory."),
    data: str = typer.Option(..., help="The new data: digits, a toy name, an image folder or a .npy file."),
    classes: str = typer.Option(None, help="Only these classes of labelled data (digits), e.g. 5-9 or 0,2,4."),
    out: str = typer.Option(..., "--run", help="Directory of the fine-tuned run and its adapter (new)."),
    lora_rank: int = typer.Option(4, help="Rank r of the LoRA adapters."),
    lora_alpha: float = typer.Option(None, help="LoRA alpha (scale alpha / r; default: the rank)."),
    lora_targets: str = typer.Option(None, help="Layers adapted, comma-separated: attention, time, conv (UNet) or "
                                                "linear (MLP); default conv,time for a UNet."),
    lora_levels: str = typer.Option(None, help="UNet resolution levels adapted, comma-separated (0: full resolution, "
                                               "with conv_in/conv_out); default 0 for a UNet."),
    full: bool = typer.Option(False, help="Train every weight instead (full fine-tuning, an ordinary run)."),
    minutes: float = typer.Option(None, help="Budget in minutes (default: the base's budget)."),
    max_steps: int = typer.Option(None, help="Or a budget in optimiser steps."),
    clock: str = typer.Option(None, help="What --minutes counts: wall (default) or process (this process's CPU time)."),
    batch_size: int = typer.Option(None, help="Global batch size (default: the base's)."),
    lr: float = typer.Option(None, help="Peak learning rate (default: 15x the base's for LoRA, the base's for --full)."),
    seed: int = typer.Option(None, help="Training seed (default: the base's)."),
) -> None:
    """Fine-tune a trained run on new data: LoRA adapters through peft, the base weights frozen (or --full)."""
    from noisecraft.data import DataConfig
    from noisecraft.hf.lora import finetune as finetune_run

    with user_errors(run_dir="--run"):
        data_cfg = DataConfig(name=data, classes=parse_classes(classes))
        targets = None if lora_targets is None else [t.strip() for t in lora_targets.split(",")]
        levels = parse_classes(lora_levels, "lora_levels")
        result = finetune_run(run, data_cfg, out, None if full else lora_rank, lora_alpha=lora_alpha,
                              lora_targets=targets, lora_levels=levels, minutes=minutes, max_steps=max_steps, clock=clock,
                              batch_size=batch_size, lr=lr, seed=seed)
    train = result.finetune.train
    typer.echo(f"fine-tuned {run} on {data}{'' if classes is None else f' classes {classes}'}: {train.step} steps "
               f"in {result.finetune.seconds:.0f} s, loss {train.loss:.4g}; {result.trainable:,} trained parameters "
               f"({100 * result.trainable / result.total:.2f}% of {result.total:,})")
    if result.adapter is None:
        typer.echo(f"fine-tuned run: {result.run_dir}  (sample it: noisecraft sample {result.run_dir})")
    else:
        typer.echo(f"adapter: {result.adapter} ({result.adapter.stat().st_size / 1000:.0f} KB)  (sample it: "
                   f"noisecraft sample {run} --lora {result.run_dir})")

"""``nora toy``: write the toy dataset and build (or fetch from the cache) the toy base model.

Mounted by the top-level CLI as ``app.add_typer(toy_app, name="toy")``. Bad input exits with code 2 and
one line on stderr naming the option; the model build's progress goes to stderr and the one-line
summary to stdout.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    help="The toy task (multi-digit addition with worked solutions) and its tiny pre-trained Llama model.",
    no_args_is_help=True,
    add_completion=False,
)

OutOption = Annotated[Path, typer.Option("--out", help="Directory to write into (created if missing).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same bytes.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is not a directory")


@app.command("data")
def data(
    out: OutOption,
    seed: SeedOption = 0,
    train: Annotated[int, typer.Option("--train", help="Number of training rows.")] = 1000,
    eval_rows: Annotated[int, typer.Option("--eval", help="Number of eval rows.")] = 200,
) -> None:
    """Write train.jsonl and eval.jsonl (disjoint, deterministic by seed) into --out."""
    from nora.toy.data import write_dataset

    _check_out(out)
    if train < 1:
        _fail(f"--train must be at least 1, got {train}")
    if eval_rows < 1:
        _fail(f"--eval must be at least 1, got {eval_rows}")
    try:
        train_path, eval_path = write_dataset(out, seed=seed, n_train=train, n_eval=eval_rows)
    except ValueError as error:
        _fail(f"--train/--eval: {error}")
    typer.echo(f"wrote {train} rows to {train_path} and {eval_rows} rows to {eval_path} (seed {seed})")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _progress(step: int, steps: int, loss: float) -> None:
    typer.echo(f"pre-training step {step}/{steps} loss {loss:.4f}", err=True)


@app.command("model")
def model(out: OutOption, seed: SeedOption = 0) -> None:
    """Pre-train the tiny Llama model on the toy task (cached) and save it in Hugging Face format to --out."""
    import time

    from nora.toy.cache import read_toy_info
    from nora.toy.model import build_toy_model

    _check_out(out)
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the build's scratch dir is removed
    try:
        model_dir = build_toy_model(out, seed=seed, progress=_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    info = read_toy_info(model_dir)
    if info is None:  # pragma: no cover - build_toy_model always writes it
        _fail(f"--out {out} holds no toy model record after the build")
    typer.echo(
        f"toy model in {model_dir} (seed {seed}, key {info.key}): greedy eval accuracy "
        f"{info.eval_accuracy:.3f} on {info.eval_rows} rows, {time.monotonic() - started:.1f}s"
    )

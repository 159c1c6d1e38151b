"""``nora train --genome URI``: the typer command the ``nora`` CLI mounts, also runnable on its own.

``register(app)`` adds ``train``, ``fetch-model`` and ``test-score`` to an existing typer app; ``app`` is
a one-command app for ``python -m nora.trainer --genome URI``. The exit code and output follow
:mod:`nora.trainer.entrypoint`, which is imported only when the command runs, so mounting ``train`` does
not import torch or TRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

GenomeOption = Annotated[
    str,
    typer.Option(
        "--genome",
        help="genome.json to train and score: a path, file:///abs/path or s3://bucket/key.",
    ),
]


def train(genome: GenomeOption) -> None:
    """Train one genome with IRPO, evaluate it, and write its adapter, metrics.json and samples.jsonl."""
    from nora.trainer.entrypoint import main

    code = main(genome)
    if code:
        raise typer.Exit(code)


def fetch_model(
    uri: Annotated[
        str,
        typer.Argument(help="The base model: s3://bucket/prefix/ or hf://org/name (optionally @revision)."),
    ],
    directory: Annotated[Path, typer.Argument(help="The model cache folder (the model-cache volume).")],
) -> None:
    """Fetch a base model once into DIRECTORY/<key>/ (the model-initializer Job's command); print it."""
    from nora.trainer.entrypoint import fetch_main

    code = fetch_main(uri, directory)
    if code:
        raise typer.Exit(code)


def test_score(
    task: Annotated[
        str,
        typer.Option("--task", help="The test-score task.json: a path, file:///abs/path or s3://bucket/key."),
    ],
) -> None:
    """Score a finished run's best, generation 0's best and the top-k ensemble on its test split."""
    from nora.trainer.heldout_command import main

    code = main(task)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Mount ``train``, ``fetch-model`` and ``test-score`` on ``app`` (the ``nora`` CLI)."""
    app.command("train")(train)
    app.command("fetch-model")(fetch_model)
    app.command("test-score")(test_score)


app = typer.Typer(
    name="nora-train",
    help="Train and score one genome (the genome Job's entrypoint).",
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("train")(train)

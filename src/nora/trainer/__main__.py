"""``python -m nora.trainer --genome URI``: the trainer image's entrypoint without the full CLI."""

from nora.trainer.cli import app

app()

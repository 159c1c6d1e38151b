"""``python -m nora.operator``: the same as ``nora operator``."""

import typer

from nora.operator.cli import operator

if __name__ == "__main__":
    typer.run(operator)

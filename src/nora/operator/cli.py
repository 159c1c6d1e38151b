"""``nora operator``: run the NoRA operator (kopf) with settings from ``NORA_*`` environment variables.

Mount on the ``nora`` CLI with ``app.command("operator")(nora.operator.cli.operator)``; also runnable as
``python -m nora.operator``. One replica runs standalone; with ``NORA_PEERING`` set, replicas coordinate
through kopf peering (one active, the others paused) and need distinct ``NORA_PRIORITY`` values (random
when unset).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Annotated

import typer

from nora.operator.settings import OperatorSettings, SettingsError

VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log kopf's and the operator's details.")
]


def operator(verbose: VerboseOption = False) -> None:
    """Run the operator: evolve every Population in the served namespaces (see NORA_* variables)."""
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as error:
        print(f"nora operator: error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    import kopf
    from kopf._core.engines.peering import Identity  # the type kopf.run wants; not re-exported

    import nora.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=verbose)
    if not verbose:  # one line per handled event is too much at hundreds of Jobs
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    peering = settings.peering
    # kopf's default identity asks the password database for the user name, and the image's numeric
    # user 65532 has no entry there (KeyError at start-up); the Pod's host name is unique per replica.
    kopf.run(
        identity=Identity(f"nora-operator@{socket.gethostname()}/{os.getpid()}"),
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=peering is None,
        peering_name=peering,
        priority=settings.peering_priority() if peering else None,
        liveness_endpoint=settings.liveness_endpoint or None,
    )


app = typer.Typer(name="nora-operator", add_completion=False, pretty_exceptions_enable=False)
app.command("operator")(operator)

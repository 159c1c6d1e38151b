"""``python -m nora``: the same command line as the ``nora`` script."""

from nora.cli import main

main()

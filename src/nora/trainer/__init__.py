"""IRPO training and evaluation of one genome: the entrypoint of every genome Job and local worker."""

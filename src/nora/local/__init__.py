"""The single-machine driver: runs genomes as subprocesses, resumable, with progress and reports."""

"""Errors of the trainer: each message is one line naming the input (file, line, field) and what is wrong."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class of the trainer's own errors; the job reports it in one line and exits non-zero."""


class TrainerInputError(TrainerError, ValueError):
    """Bad input: genome.json, a dataset file, the base model or the starting adapter (exit code 2)."""

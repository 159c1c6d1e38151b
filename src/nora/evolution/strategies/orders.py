"""The store work a ``cmaes`` or ``compose`` genome needs before it runs (the strategies' breeding orders).

* :class:`ProjectionOrder` writes a ``cmaes`` genome's point record (``start/point.json``); the trainer
  projects it into the starting adapter, since only it knows the base model's module shapes.
* :class:`ComposeOrder` writes a ``compose`` genome's starting adapter: the weighted sum of the seed
  adapters' updates.

Both are idempotent like crossover orders: a finished output is left alone, and a rerun writes the same
bytes (the record and the composition are deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

from nora.evolution.genome_store import download_genome, upload_genome
from nora.evolution.strategies.points import POINT_FILE, PointRecord
from nora.genetics.compose import compose
from nora.genetics.io import MANIFEST_FILE
from nora.storage import Store, open_uri


@dataclass(frozen=True)
class ProjectionOrder:
    """Write ``record`` to ``<output>/point.json`` for genome ``child``."""

    child: str
    output: str
    record: PointRecord


@dataclass(frozen=True)
class ComposeOrder:
    """Write ``sum_i weights[i] * sources[i]`` (adapter URIs) to ``output`` for genome ``child``."""

    child: str
    output: str
    sources: tuple[str, ...]
    weights: tuple[float, ...]


def source_in(store: Store, uri: str) -> tuple[Store, str]:
    """The store and key of adapter ``uri``: ``store`` itself when the URI is inside it (its credentials)."""
    probe = store.uri("x")
    base = probe[: -len("x")]
    if uri.startswith(base) and uri.removeprefix(base).strip("/"):
        return store, uri.removeprefix(base).strip("/")
    return open_uri(uri)


def execute_projection(order: ProjectionOrder, store: Store) -> bool:
    """Write the point record; ``False`` if it was already there."""
    key = f"{order.output}/{POINT_FILE}"
    if store.exists(key):
        return False
    store.write_bytes(key, order.record.dumps())
    return True


def execute_compose(order: ComposeOrder, store: Store) -> bool:
    """Write the composed adapter; ``False`` if it was already there."""
    if store.exists(f"{order.output}/{MANIFEST_FILE}"):
        return False
    sources = [download_genome(*source_in(store, uri)) for uri in order.sources]
    upload_genome(store, order.output, compose(sources, order.weights))
    return True

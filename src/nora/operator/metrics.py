"""Prometheus metrics of the operator, served on ``/metrics`` (prometheus-client).

=====================================  =========  ============================================
Metric                                 Type       Labels
=====================================  =========  ============================================
nora_generations_completed_total       counter    namespace, population
nora_genomes                           gauge      namespace, population, phase (current gen.)
nora_best_fitness                      gauge      namespace, population (best so far)
nora_mean_fitness                      gauge      namespace, population (last finished gen.)
nora_current_generation                gauge      namespace, population (index being run)
nora_population_phase                  gauge      namespace, population, phase (1 = current phase)
nora_job_duration_seconds              histogram  namespace, population, outcome
nora_breeding_duration_seconds         histogram  namespace, population
nora_reconcile_duration_seconds        histogram  (none)
nora_reconcile_errors_total            counter    namespace, population, error
=====================================  =========  ============================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

GENOME_PHASES = ("Pending", "Running", "Succeeded", "Failed")
POPULATION_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Stopped")
JOB_OUTCOMES = ("Succeeded", "Failed")
JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
BREEDING_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
POPULATION = ("namespace", "population")


class Metrics:
    """The operator's metrics in their own registry (one per operator; tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.generations_completed = Counter(
            "nora_generations_completed", "Generations finished.", POPULATION, registry=r
        )
        self.genomes = Gauge(
            "nora_genomes", "Genomes of the current generation by phase.", (*POPULATION, "phase"), registry=r
        )
        self.best_fitness = Gauge("nora_best_fitness", "Best fitness so far.", POPULATION, registry=r)
        self.mean_fitness = Gauge(
            "nora_mean_fitness", "Mean fitness of the last finished generation.", POPULATION, registry=r
        )
        self.current_generation = Gauge(
            "nora_current_generation", "Index of the generation being run.", POPULATION, registry=r
        )
        self.population_phase = Gauge(
            "nora_population_phase", "1 for the Population's phase, 0 for the others.",
            (*POPULATION, "phase"), registry=r,
        )  # fmt: skip
        self.job_duration = Histogram(
            "nora_job_duration_seconds", "Genome Job run time.", (*POPULATION, "outcome"),
            buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.breeding_duration = Histogram(
            "nora_breeding_duration_seconds", "Time to breed one generation's offspring.", POPULATION,
            buckets=BREEDING_BUCKETS, registry=r,
        )  # fmt: skip
        self.reconcile_duration = Histogram(
            "nora_reconcile_duration_seconds", "Time of one reconcile pass over a Population.", registry=r
        )
        self.reconcile_errors = Counter(
            "nora_reconcile_errors", "Reconcile passes that failed.", (*POPULATION, "error"), registry=r
        )

    def set_genomes(self, namespace: str, population: str, counts: Mapping[str, int]) -> None:
        for phase in GENOME_PHASES:
            self.genomes.labels(namespace, population, phase).set(counts.get(phase, 0))

    def set_population(self, namespace: str, population: str, phase: str, generation: int) -> None:
        """Record the Population's phase (one-hot over the phases) and its current generation.

        Also creates its counter and histogram series at zero, so that ``rate()``/``increase()`` see
        their first event (a series born at 1 has no earlier sample to rise from)."""
        for each in POPULATION_PHASES:
            self.population_phase.labels(namespace, population, each).set(1 if each == phase else 0)
        self.current_generation.labels(namespace, population).set(generation)
        self.generations_completed.labels(namespace, population)
        self.breeding_duration.labels(namespace, population)
        for outcome in JOB_OUTCOMES:
            self.job_duration.labels(namespace, population, outcome)

    def forget(self, namespace: str, population: str) -> None:
        """Drop a deleted Population's series from the gauges."""
        for phase in GENOME_PHASES:
            _remove(self.genomes, namespace, population, phase)
        for phase in POPULATION_PHASES:
            _remove(self.population_phase, namespace, population, phase)
        for metric in (
            self.best_fitness, self.mean_fitness, self.current_generation, self.generations_completed,
            self.breeding_duration,
        ):  # fmt: skip
            _remove(metric, namespace, population)
        for outcome in JOB_OUTCOMES:
            _remove(self.job_duration, namespace, population, outcome)

    def serve(self, address: str, port: int) -> None:
        """Serve ``/metrics`` on ``address:port`` from a background thread."""
        start_http_server(port, addr=address, registry=self.registry)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)

"""The kopf operator: thin handlers over the engine, pure Job builders, Prometheus metrics.

Modules: :mod:`~nora.operator.handlers` (kopf handlers), :mod:`~nora.operator.runtime` (the per-Population
loop), :mod:`~nora.operator.reconciler` (one level-triggered pass), :mod:`~nora.operator.progress` (the
pure per-generation step), :mod:`~nora.operator.jobs` and :mod:`~nora.operator.objects` (pure builders),
:mod:`~nora.operator.generations` and :mod:`~nora.operator.population_status` (pure status code),
:mod:`~nora.operator.breeder` (planning and breeding in a separate process),
:mod:`~nora.operator.storage` (S3 access), :mod:`~nora.operator.cluster` (the Kubernetes seam),
:mod:`~nora.operator.metrics`, :mod:`~nora.operator.settings` (``NORA_*`` variables) and
:mod:`~nora.operator.cli` (``nora operator``).

Deleting a Population deletes its Generations and Jobs (ownerReferences, garbage collection) and keeps
its data in S3 unless ``spec.storage.cleanup: true``. ``spec.suspend: true`` stops it (phase Stopped:
no new Jobs, breeding or generations); raising ``spec.maxGenerations`` resumes a Population that
finished by reaching it.
"""

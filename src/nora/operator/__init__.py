"""The kopf operator: thin handlers over the engine, pure Job builders, Prometheus metrics."""

"""The evolution engine: plan a generation, breed offspring, decide when to stop (no Kubernetes, no subprocesses, no S3 calls)."""

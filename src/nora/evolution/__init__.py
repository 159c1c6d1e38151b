"""The evolution engine: plan generations, breed offspring, decide when to stop.

No Kubernetes, no subprocesses, no S3 calls of its own: it takes a Store.
"""

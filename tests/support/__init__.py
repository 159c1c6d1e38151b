"""Test support: a real Kubernetes control plane, a process-kubelet and an S3 server on 127.0.0.1."""

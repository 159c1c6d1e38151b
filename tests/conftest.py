"""Repo-wide pytest configuration: loads the integration fixtures (control plane, kubelet, S3)."""

pytest_plugins = ["tests.support.fixtures"]

"""Pytest plugin: a moto S3 server on a loopback port (filled in by tests that need S3)."""

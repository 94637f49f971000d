"""Tollbooth: a self-hosted billing service (gRPC server, webhook sidecar, Envoy gateway)."""

__version__ = "0.1.0"

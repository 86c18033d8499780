"""Strife: a small, correct payment network over gRPC with mutual TLS."""
__version__ = "0.1.0"

"""Streaming sentiment scorer: command line, settings and local services."""

__version__ = "0.1.0"

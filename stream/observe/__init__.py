"""What the worker tells about itself: metrics, health and readiness, drift, live accuracy, its log lines.

The bottom of ``stream/``: these modules import nothing else of ``stream``."""

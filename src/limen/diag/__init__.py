"""Diagnostics for operators: Prometheus metrics, /healthz and /readyz on `diag_addr`.

metrics.py holds every metric and the one-line functions other modules call; server.py
serves them (off unless `diag_addr` is set); timed_backend.py measures storage calls.
"""

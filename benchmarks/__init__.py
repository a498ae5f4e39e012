"""Benchmark harness for otel-callbacks (issue 6).

Entry point: ``python -m benchmarks.run --help`` (see benchmarks/README.md).
Everything here is benchmark-only: the peer instrumentations it compares
against live in the separate venv made by ``scripts/setup-bench-venv.sh``.
"""

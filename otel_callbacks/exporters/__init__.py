"""Exporters the library ships: OTLP/JSON lines, the OpenTelemetry Collector file format.

Below both ``config`` and ``cli``: the environment-based setup and the command-line tools use
them; they use neither.
"""

from .file_exporter import FILE_ENV, OTLPJsonFileSpanExporter, default_path

__all__ = ["FILE_ENV", "OTLPJsonFileSpanExporter", "default_path"]

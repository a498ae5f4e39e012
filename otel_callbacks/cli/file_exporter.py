"""Moved to ``otel_callbacks.exporters.file_exporter``; this name stays for old imports and
entry points installed before the move."""

from ..exporters.file_exporter import DEFAULT_FILE, FILE_ENV, OTLPJsonFileSpanExporter, default_path  # noqa: F401

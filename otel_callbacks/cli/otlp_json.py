"""Moved to ``otel_callbacks.exporters.otlp_json``; this name stays for old imports."""

from ..exporters.otlp_json import (  # noqa: F401
    STATUS_ERROR,
    OTLPJsonError,
    SpanRecord,
    any_value,
    encode_line,
    encode_request,
    parse_lines,
)

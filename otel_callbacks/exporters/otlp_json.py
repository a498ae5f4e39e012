"""OTLP/JSON: finished spans to the Collector file exporter's line format, and back.

One line is one ``ExportTraceServiceRequest`` in the OTLP/JSON mapping: camelCase fields,
64-bit integers as strings, enums as integers and, unlike protobuf's generic JSON, trace and
span ids as lowercase hex. Reading accepts base64 ids and enum names too, so files written by
other tools load as well.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
          "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
STATUS_ERROR = 2


class OTLPJsonError(ValueError):
    """A line that is not an OTLP/JSON trace request."""


# --- writing ------------------------------------------------------------------------------
def encode_request(spans: Sequence[Any]) -> dict[str, Any]:
    """SDK ``ReadableSpan`` objects as one OTLP/JSON request (a dict ready for ``json.dumps``)."""
    from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _ids_to_hex(span)
                for link in span.get("links", ()):
                    _ids_to_hex(link)
    return request


def encode_line(spans: Sequence[Any]) -> str:
    """One compact JSON line (no newline) for ``spans``."""
    return json.dumps(encode_request(spans), separators=(",", ":"), ensure_ascii=False)


def _ids_to_hex(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = obj.get(key)
        if value:
            obj[key] = base64.b64decode(value).hex()


# --- reading ------------------------------------------------------------------------------
@dataclass
class SpanRecord:
    """A span as the tree renderer needs it, whatever it was read from."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    status_code: int = 0
    status_message: str = ""
    service: str | None = None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def failed(self) -> bool:
        return self.status_code == STATUS_ERROR


def parse_lines(lines: Iterable[str], source: str = "<input>") -> Iterator[SpanRecord]:
    """Spans of every request in ``lines``; blank lines are skipped.

    Raises ``OTLPJsonError`` naming ``source`` and the line number for anything else that is
    not an OTLP/JSON trace request.
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
                raise OTLPJsonError("no resourceSpans list")
            yield from _request_spans(request)
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise OTLPJsonError(f"{source}:{number}: not an OTLP/JSON trace line ({reason})") from None


def _request_spans(request: dict[str, Any]) -> Iterator[SpanRecord]:
    for resource_spans in request["resourceSpans"]:
        resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
        service = resource.get("service.name")
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                yield _span(span, service if isinstance(service, str) else None)


def _span(span: dict[str, Any], service: str | None) -> SpanRecord:
    status = span.get("status") or {}
    events = [(str(e.get("name", "")), int(e.get("timeUnixNano", 0)), _attributes(e.get("attributes")))
              for e in span.get("events") or ()]
    return SpanRecord(
        trace_id=_hex_id(span["traceId"], 16),
        span_id=_hex_id(span["spanId"], 8),
        parent_id=_hex_id(span["parentSpanId"], 8) if span.get("parentSpanId") else None,
        name=str(span.get("name", "")),
        kind=_enum(span.get("kind", 0), _KINDS),
        start_ns=int(span["startTimeUnixNano"]),
        end_ns=int(span.get("endTimeUnixNano") or span["startTimeUnixNano"]),
        attributes=_attributes(span.get("attributes")),
        events=events,
        status_code=_enum(status.get("code", 0), _STATUS),
        status_message=str(status.get("message", "")),
        service=service,
    )


def _hex_id(value: Any, size: int) -> str:
    if not isinstance(value, str):
        raise OTLPJsonError(f"bad id {value!r}")
    if len(value) == 2 * size:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    raw = base64.b64decode(value, validate=True)
    if len(raw) != size:
        raise OTLPJsonError(f"bad id {value!r}")
    return raw.hex()


def _enum(value: Any, names: dict[str, int]) -> int:
    return names[value] if isinstance(value, str) and value in names else int(value)


def _attributes(items: Any) -> dict[str, Any]:
    return {str(item["key"]): any_value(item.get("value") or {}) for item in items or ()}


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None

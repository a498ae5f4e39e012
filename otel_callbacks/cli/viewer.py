"""``otel-callbacks view FILE``: the trace tree of an OTLP/JSON lines file.

Files come from running exporters and other tools, so any input is expected: what is valid
is rendered, each problem is one warning line (a bounded number of them), and only a file
with nothing to show is an error. Never a traceback.
"""

from __future__ import annotations

import binascii
import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..exporters.otlp_json import SpanRecord, _span
from .tree import Glyphs, output_width, render, use_color, write

_MAX_TIME = 2**64  # OTLP timestamps are fixed64 nanoseconds
_MAX_WARNINGS = 10
# What a malformed span or value raises while it is read: skip it, say why.
_BAD_INPUT = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
              RecursionError, binascii.Error)


class ViewError(Exception):
    """A problem worth one line on stderr: missing file, bad line, nothing to show."""


def load(path: str, trace_id: str | None = None,
         warnings: list[str] | None = None) -> list[SpanRecord]:
    """Spans from ``path`` (``-`` for stdin), optionally only those of traces starting with
    ``trace_id`` (a prefix is enough, as in most trace UIs). What cannot be read is skipped
    and described in ``warnings``; ``ViewError`` when nothing at all can be shown."""
    problems: list[str] = [] if warnings is None else warnings
    try:
        if path == "-":
            stdin = getattr(sys.stdin, "buffer", None)  # a replaced sys.stdin may have none
            lines = stdin if stdin is not None else (
                line.encode("utf-8", "surrogateescape") for line in sys.stdin)
            records = _read(lines, "<stdin>", problems)
        else:
            with open(path, "rb") as file:
                records = _read(file, path, problems)
    except OSError as exc:
        raise ViewError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not records:
        if problems:
            first = problems[0]
            more = len(problems) - 1
            raise ViewError(first + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))
        raise ViewError(f"{path}: no spans found")
    if trace_id:
        wanted = trace_id.strip().lower()
        records = [r for r in records if r.trace_id.startswith(wanted)]
        if not records:
            raise ViewError(f"{path}: no trace with id {trace_id}")
    return records


def _read(lines: Iterable[bytes], source: str, problems: list[str]) -> list[SpanRecord]:
    records: list[SpanRecord] = []
    for number, raw in enumerate(lines, 1):
        where = f"{source}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{where}: not UTF-8 text" if number > 1
                            else f"{source}: not a text file of OTLP/JSON lines")
            continue
        if not text.strip():
            continue
        try:
            request = json.loads(text)
        except RecursionError:
            problems.append(f"{where}: not an OTLP/JSON trace line (nested too deeply)")
            continue
        except ValueError as exc:  # incl. a half-written last line of a running exporter
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            problems.append(f"{where}: not an OTLP/JSON trace line ({reason})")
            continue
        if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
            problems.append(f"{where}: not an OTLP/JSON trace line (no resourceSpans list)")
            continue
        for span, service in _raw_spans(request):
            try:
                record = _span(span, service)
                _check(record)
            except _BAD_INPUT as exc:
                problems.append(f"{where}: not an OTLP/JSON span, skipped ({_reason(exc)})")
                continue
            records.append(record)
    return records


def _raw_spans(request: dict[str, Any]) -> Iterator[tuple[Any, str | None]]:
    """(span dict, service name) of every span in a request, whatever its shape."""
    for resource_spans in _dicts(request["resourceSpans"]):
        service = None
        resource = resource_spans.get("resource")
        for item in _dicts(resource.get("attributes") if isinstance(resource, dict) else None):
            value = item.get("value")
            if item.get("key") == "service.name" and isinstance(value, dict):
                name = value.get("stringValue")
                service = name if isinstance(name, str) else None
        for scope_spans in _dicts(resource_spans.get("scopeSpans")):
            spans = scope_spans.get("spans")
            yield from ((span, service) for span in (spans if isinstance(spans, list) else ()))


def _dicts(items: Any) -> Iterator[dict[str, Any]]:
    return (item for item in (items if isinstance(items, list) else ()) if isinstance(item, dict))


def _check(record: SpanRecord) -> None:
    """Timestamps a tree can be drawn with; events without one are dropped."""
    for name, value in (("start time", record.start_ns), ("end time", record.end_ns)):
        if not 0 <= value < _MAX_TIME:
            raise ValueError(f"{name} out of range")
    record.events = [e for e in record.events if 0 <= e[1] < _MAX_TIME]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:200] or type(exc).__name__


def view(path: str, *, trace_id: str | None = None, attributes: bool = False,
         color: str = "auto", stream: IO[str] | None = None,
         errors: IO[str] | None = None) -> None:
    """Print every (or the chosen) trace of ``path`` as a tree, and one warning line per
    problem (at most ``_MAX_WARNINGS``) to ``errors``; raises ``ViewError``."""
    from . import PROG

    stream = stream or sys.stdout
    errors = errors or sys.stderr
    warnings: list[str] = []
    records = load(path, trace_id, warnings)
    lines = render(records, attributes=attributes, width=output_width(stream),
                   glyphs=Glyphs.for_stream(stream), warnings=warnings)
    write(lines, stream, color=use_color(color, stream))
    for warning in warnings[:_MAX_WARNINGS]:
        errors.write(f"{PROG}: warning: {warning}\n")
    if len(warnings) > _MAX_WARNINGS:
        errors.write(f"{PROG}: warning: {len(warnings) - _MAX_WARNINGS} more problems not shown\n")

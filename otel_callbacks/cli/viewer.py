"""``otel-callbacks view FILE``: the trace tree of an OTLP/JSON lines file."""

from __future__ import annotations

import sys
from typing import IO

from ..exporters.otlp_json import OTLPJsonError, SpanRecord, parse_lines
from .tree import Glyphs, output_width, render, use_color, write


class ViewError(Exception):
    """A problem worth one line on stderr: missing file, bad line, nothing to show."""


def load(path: str, trace_id: str | None = None) -> list[SpanRecord]:
    """Spans from ``path`` (``-`` for stdin), optionally only those of traces starting with
    ``trace_id`` (a prefix is enough, as in most trace UIs)."""
    try:
        if path == "-":
            records = list(parse_lines(sys.stdin, "<stdin>"))
        else:
            with open(path, encoding="utf-8") as file:
                records = list(parse_lines(file, path))
    except OSError as exc:
        raise ViewError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ViewError(f"{path}: not a text file of OTLP/JSON lines") from None
    except OTLPJsonError as exc:
        raise ViewError(str(exc)) from None
    if not records:
        raise ViewError(f"{path}: no spans found")
    if trace_id:
        wanted = trace_id.strip().lower()
        records = [r for r in records if r.trace_id.startswith(wanted)]
        if not records:
            raise ViewError(f"{path}: no trace with id {trace_id}")
    return records


def view(path: str, *, trace_id: str | None = None, attributes: bool = False,
         color: str = "auto", stream: IO[str] | None = None) -> None:
    """Print every (or the chosen) trace of ``path`` as a tree; raises ``ViewError``."""
    stream = stream or sys.stdout
    records = load(path, trace_id)
    lines = render(records, attributes=attributes, width=output_width(stream),
                   glyphs=Glyphs.for_stream(stream))
    write(lines, stream, color=use_color(color, stream))

"""Render spans as a tree with durations and a waterfall bar per span.

The layout is computed once as lines of (text, style) segments; ``write`` prints them in
colour through rich when asked and available, else as plain text. The plain text is the same
characters without styles, so output piped to a file or a test reads exactly like the screen.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ..exporters.otlp_json import SpanRecord

Segment = tuple[str, str]  # (text, rich style; "" for none)
Line = list[Segment]

_USAGE_IN = "gen_ai.usage.input_tokens"
_USAGE_OUT = "gen_ai.usage.output_tokens"
_RETRIES = "langchain.run.retry_count"
_CHUNKS = "langchain.llm.token_count"
_TAGS = "langchain.run.tags"
_MAX_NAME = 56
_MAX_VALUE = 160


@dataclass(frozen=True)
class Glyphs:
    tee: str
    last: str
    pipe: str
    blank: str
    bar: str
    track: str
    error: str
    arrow: str
    dot: str
    ellipsis: str

    @staticmethod
    def for_stream(stream: IO[str]) -> Glyphs:
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "├─│└█·✗→…".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            return ASCII
        return UNICODE


UNICODE = Glyphs("├── ", "└── ", "│   ", "    ", "█", "·", "✗", "→", "·", "…")
ASCII = Glyphs("|-- ", "`-- ", "|   ", "    ", "#", ".", "x", "->", "-", "...")


def format_duration(ns: int) -> str:
    ms = ns / 1e6
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def group_traces(records: Iterable[SpanRecord]) -> list[list[SpanRecord]]:
    """Spans by trace, traces ordered by their first start."""
    traces: dict[str, list[SpanRecord]] = defaultdict(list)
    for record in records:
        traces[record.trace_id].append(record)
    return sorted(traces.values(), key=lambda spans: min(s.start_ns for s in spans))


def render(records: Iterable[SpanRecord], *, attributes: bool = False, width: int = 100,
           glyphs: Glyphs | None = None) -> list[Line]:
    """Every trace in ``records`` as styled lines (a header, then one line per span)."""
    glyphs = glyphs or UNICODE
    lines: list[Line] = []
    for index, spans in enumerate(group_traces(records)):
        if index:
            lines.append([])
        lines.extend(_TraceLayout(spans, attributes, width, glyphs).lines())
    return lines


class _TraceLayout:
    def __init__(self, spans: Sequence[SpanRecord], attributes: bool, width: int,
                 glyphs: Glyphs) -> None:
        self.spans = spans
        self.attributes = attributes
        self.glyphs = glyphs
        self.start = min(s.start_ns for s in spans)
        self.total = max(1, max(s.end_ns for s in spans) - self.start)
        ids = {s.span_id for s in spans}
        self.children: dict[str | None, list[SpanRecord]] = defaultdict(list)
        for span in spans:
            self.children[span.parent_id if span.parent_id in ids else None].append(span)
        for siblings in self.children.values():
            siblings.sort(key=lambda s: (s.start_ns, s.name))
        self.rows = list(self._walk(None, ""))
        self.name_width = min(_MAX_NAME, max(len(p) + len(s.name) for s, p, _ in self.rows))
        self.bar_width = max(10, min(40, width - self.name_width - 12 - 4))

    def _walk(self, parent: str | None, prefix: str) -> Iterable[tuple[SpanRecord, str, str]]:
        siblings = self.children.get(parent, [])
        for i, span in enumerate(siblings):
            last = i == len(siblings) - 1
            if parent is None:
                branch, follow = "", ""
            else:
                branch = prefix + (self.glyphs.last if last else self.glyphs.tee)
                follow = prefix + (self.glyphs.blank if last else self.glyphs.pipe)
            yield span, branch, follow
            yield from self._walk(span.span_id, follow)

    def lines(self) -> list[Line]:
        services = sorted({s.service for s in self.spans if s.service})
        header: Line = [("trace ", "bold"), (self.spans[0].trace_id, "bold cyan")]
        for part in (*services, f"{len(self.spans)} spans", format_duration(self.total)):
            header.append((f"  {self.glyphs.dot}  ", "dim"))
            header.append((part, ""))
        out = [header]
        for span, branch, follow in self.rows:
            out.append(self._span_line(span, branch))
            if self.attributes:
                out.extend(self._details(span, follow))
        return out

    def _span_line(self, span: SpanRecord, branch: str) -> Line:
        name = span.name
        room = self.name_width - len(branch)
        if len(name) > room:
            name = _clip(name, max(2, room), self.glyphs.ellipsis)
        style = "bold red" if span.failed else ("bold" if not branch else "")
        line: Line = [(branch, "dim"), (name, style),
                      (" " * (self.name_width - len(branch) - len(name)), ""),
                      (f"{format_duration(span.duration_ns):>12}", "yellow"), ("  ", "")]
        line.extend(self._bar(span))
        note = self._note(span)
        if note:
            line.append(("  " + note[0], note[1]))
        return line

    def _bar(self, span: SpanRecord) -> list[Segment]:
        width = self.bar_width
        offset = min(width - 1, int((span.start_ns - self.start) * width / self.total))
        length = max(1, min(width - offset, round(span.duration_ns * width / self.total)))
        colour = "red" if span.failed else "green"
        return [(self.glyphs.track * offset, "dim"), (self.glyphs.bar * length, colour),
                (self.glyphs.track * (width - offset - length), "dim")]

    def _note(self, span: SpanRecord) -> tuple[str, str] | None:
        if span.failed:
            message = span.status_message or "error"
            return f"{self.glyphs.error} {_clip(message, 60, self.glyphs.ellipsis)}", "red"
        parts = []
        tokens_in, tokens_out = span.attributes.get(_USAGE_IN), span.attributes.get(_USAGE_OUT)
        if tokens_in is not None or tokens_out is not None:
            parts.append(f"{tokens_in or 0}{self.glyphs.arrow}{tokens_out or 0} tokens")
        chunks = span.attributes.get(_CHUNKS)
        if chunks:
            parts.append(f"streamed {chunks} chunks")
        attempt = _attempt(span.attributes.get(_TAGS))
        if attempt:
            parts.append(f"attempt {attempt}")
        retries = span.attributes.get(_RETRIES)
        if retries:
            parts.append(f"{retries} retr{'y' if retries == 1 else 'ies'}")
        return ("  ".join(parts), "cyan") if parts else None

    def _details(self, span: SpanRecord, follow: str) -> list[Line]:
        indent = follow + "  "
        out: list[Line] = []
        for key in sorted(span.attributes):
            out.append([(indent, "dim"), (key, "blue"), (" = ", "dim"),
                        (_clip(_show(span.attributes[key]), _MAX_VALUE, self.glyphs.ellipsis), "")])
        for name, time_ns, attrs in span.events:
            offset = format_duration(max(0, time_ns - span.start_ns))
            shown = ", ".join(f"{k}={_clip(_show(v), 60, self.glyphs.ellipsis)}"
                              for k, v in attrs.items())
            out.append([(indent, "dim"), (f"event +{offset} ", "magenta"), (name, "magenta"),
                        (f"  {shown}" if shown else "", "dim")])
        return out


def _attempt(tags: Any) -> int | None:
    """LangChain tags retried attempts ``retry:attempt:N`` (N >= 2)."""
    for tag in tags if isinstance(tags, (list, tuple)) else ():
        if isinstance(tag, str) and tag.startswith("retry:attempt:") and tag[14:].isdigit():
            return int(tag[14:])
    return None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value.replace("\n", "\\n")
    return repr(value)


def _clip(text: str, limit: int, ellipsis: str = "…") -> str:
    return text if len(text) <= limit else text[:max(1, limit - len(ellipsis))] + ellipsis


# --- output -------------------------------------------------------------------------------
def use_color(mode: str, stream: IO[str]) -> bool:
    """``always``/``never``, or ``auto``: a terminal, ``NO_COLOR`` unset and rich installed."""
    if mode == "never":
        return False
    if mode == "auto" and (os.environ.get("NO_COLOR") or not _isatty(stream)):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def output_width(stream: IO[str]) -> int:
    """The terminal's width when writing to one, else a fixed 100 (stable piped output)."""
    return shutil.get_terminal_size((100, 24)).columns if _isatty(stream) else 100


def write(lines: Sequence[Line], stream: IO[str] | None = None, *, color: bool = False) -> None:
    stream = stream or sys.stdout
    if color:
        from rich.console import Console
        from rich.text import Text

        console = Console(file=stream, force_terminal=True, highlight=False, soft_wrap=True)
        for line in lines:
            text = Text()
            for chunk, style in line:
                text.append(chunk, style=style or None)
            console.print(text)
        return
    encoding = getattr(stream, "encoding", None) or "utf-8"
    for line in lines:
        plain = "".join(chunk for chunk, _ in line).rstrip() + "\n"
        try:
            stream.write(plain)
        except UnicodeEncodeError:  # recorded content the terminal cannot show
            stream.write(plain.encode(encoding, "replace").decode(encoding))

"""Render spans as a tree with durations and a waterfall bar per span.

The layout is computed once as lines of (text, style) segments; ``write`` prints them in
colour through rich when asked and available, else as plain text. The plain text is the same
characters without styles, so output piped to a file or a test reads exactly like the screen.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
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
_MAX_LEVELS = 10  # deeper spans keep the last levels of their indentation, after an ellipsis
# Terminal escape sequences (CSI, OSC, two-character ESC ones) and the characters that move
# the cursor, ring, or reorder text: file content must never drive the terminal.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~]?)|\x9b[0-?]*[ -/]*[@-~]?")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


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
           glyphs: Glyphs | None = None, warnings: list[str] | None = None) -> list[Line]:
    """Every trace in ``records`` as styled lines (a header, then one line per span: each
    span exactly once, spans in a parent cycle as roots, described in ``warnings``)."""
    glyphs = glyphs or UNICODE
    warnings = [] if warnings is None else warnings
    lines: list[Line] = []
    for index, spans in enumerate(group_traces(displayable(r) for r in records)):
        if index:
            lines.append([])
        lines.extend(_TraceLayout(spans, attributes, width, glyphs, warnings).lines())
    return lines


def printable(text: str) -> str:
    """``text`` without terminal escape sequences or control characters (newlines shown)."""
    if text.isprintable():
        return text
    return _CONTROLS.sub(lambda m: "\\n" if m.group() == "\n" else "", _ESCAPES.sub("", text))


def displayable(span: SpanRecord) -> SpanRecord:
    """A copy of ``span`` whose every shown string is ``printable``."""
    return dataclasses.replace(
        span, name=printable(span.name), status_message=printable(span.status_message),
        service=printable(span.service) if span.service is not None else None,
        attributes=_printable_items(span.attributes),
        events=[(printable(name), time, _printable_items(attrs)) for name, time, attrs in span.events])


def _printable_items(items: dict[str, Any]) -> dict[str, Any]:
    # Nested values are shown by repr(), which escapes what is not printable.
    return {printable(key): printable(value) if isinstance(value, str) else value
            for key, value in items.items()}


class _TraceLayout:
    def __init__(self, spans: Sequence[SpanRecord], attributes: bool, width: int,
                 glyphs: Glyphs, warnings: list[str]) -> None:
        self.spans = spans
        self.attributes = attributes
        self.glyphs = glyphs
        self.warnings = warnings
        self.start = min(s.start_ns for s in spans)
        self.total = max(1, max(s.end_ns for s in spans) - self.start)
        ids = {s.span_id for s in spans}
        self.children: dict[str | None, list[SpanRecord]] = defaultdict(list)
        for span in spans:
            self.children[span.parent_id if span.parent_id in ids else None].append(span)
        for siblings in self.children.values():
            siblings.sort(key=lambda s: (s.start_ns, s.name))
        self.rows = list(self._rows())
        self.name_width = min(_MAX_NAME, max(len(p) + len(s.name) for s, p, _ in self.rows))
        self.bar_width = max(10, min(40, width - self.name_width - 12 - 4))

    def _rows(self) -> Iterator[tuple[SpanRecord, str, str]]:
        """(span, branch, follow) in display order: every span once, however the parent links
        go. Spans no root reaches are in a parent cycle: the earliest of each is a root."""
        shown: set[int] = set()
        yield from self._walk(self.children.get(None, []), shown)
        for span in sorted(self.spans, key=lambda s: (s.start_ns, s.name)):
            if id(span) not in shown:
                self.warnings.append(f"trace {span.trace_id}: span {span.name!r} ({span.span_id}) "
                                     "is in a parent cycle; shown as a root")
                yield from self._walk([span], shown)

    def _walk(self, roots: list[SpanRecord], shown: set[int]) -> Iterator[tuple[SpanRecord, str, str]]:
        """Depth-first with an explicit stack: a parent chain of any depth is fine."""
        glyphs = self.glyphs
        stack = [(span, "", "") for span in reversed(roots) if id(span) not in shown]
        shown.update(id(span) for span, _, _ in stack)
        while stack:
            span, branch, follow = stack.pop()
            yield span, branch, follow
            children = [c for c in self.children.get(span.span_id, ()) if id(c) not in shown]
            shown.update(id(c) for c in children)
            if len(follow) >= 4 * _MAX_LEVELS:  # glyphs are 4 characters wide
                follow = (glyphs.ellipsis + "   ")[:4] + follow[-4 * (_MAX_LEVELS - 1):]
            for i in range(len(children) - 1, -1, -1):
                last = i == len(children) - 1
                stack.append((children[i], follow + (glyphs.last if last else glyphs.tee),
                               follow + (glyphs.blank if last else glyphs.pipe)))

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
    try:
        return repr(value)
    except RecursionError:
        return "<nested too deeply>"


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

"""The otel-callbacks command, run as users run it (a subprocess): the demo prints its trace
tree, ``view`` renders files the same way, and bad input gives one line and a failing exit."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otel_callbacks.exporters.otlp_json import SpanRecord
from otel_callbacks.cli.tree import ASCII, render, write

DURATION = r"\d+(?:\.\d+)? (?:ms|s)"
SPAN_LINE = re.compile(rf"^(?P<branch>[│├└─|`\- ]*)(?P<name>\S.*?)\s+(?P<duration>{DURATION})  \S")
# (depth, span name) in display order: the demo app's run tree.
DEMO_TREE = [
    (0, "invoke_agent support_agent"),
    (1, "retrieval KnowledgeBase"),
    (1, "plan_with_retry"),
    (2, "chat scripted-chat-1"),
    (2, "chat scripted-chat-1"),
    (1, "execute_tool lookup_order"),
    (1, "chat scripted-chat-1"),
]


def otel_callbacks(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "otel_callbacks.cli", *args], env=environ,
                          capture_output=True, text=True, timeout=timeout)


def span_lines(output: str) -> list[tuple[int, str, str]]:
    """(depth, name, line) of every span line of the rendered tree."""
    found = []
    for line in output.splitlines():
        match = SPAN_LINE.match(line)
        if match:
            found.append((len(match["branch"]) // 4, match["name"], line))
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    started = time.monotonic()
    result = otel_callbacks("demo", "--file", str(out))
    assert time.monotonic() - started < 15
    return result, out


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("otel-callbacks")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("otel-callbacks ")


def test_demo_prints_the_trace_tree(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = demo
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("answer: Order A-1042")
    assert re.search(r"^trace [0-9a-f]{32}  ·  otel-callbacks-demo  ·  7 spans  ·  ", result.stdout, re.M)
    lines = span_lines(result.stdout)
    assert [(depth, name) for depth, name, _ in lines] == DEMO_TREE
    failed, retried, streamed = lines[3][2], lines[4][2], lines[6][2]
    assert "✗ ServiceUnavailable: 503 model overloaded" in failed
    assert "attempt 2" in retried and "tokens" in retried
    assert "streamed" in streamed
    assert f"7 spans written to {out} (file)" in result.stdout
    assert result.stderr == ""


def test_demo_waterfall_bars_follow_start_times(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    bars = [re.search(r"[·█]+", line[SPAN_LINE.match(line).end() - 1:]).group(0)  # type: ignore[union-attr]
            for _, _, line in span_lines(demo[0].stdout)]
    assert len({len(bar) for bar in bars}) == 1  # one width for the whole trace
    assert bars[0].count("█") == len(bars[0])  # the root spans the trace
    offsets = [bar.index("█") for bar in bars[1:]]
    assert offsets == sorted(offsets)  # children in start order, left to right


def test_view_renders_the_demo_file_like_the_demo(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = demo
    viewed = otel_callbacks("view", str(out))
    assert viewed.returncode == 0, viewed.stderr
    assert [line for *_, line in span_lines(viewed.stdout)] == [line for *_, line in span_lines(result.stdout)]


def test_view_attributes_and_events(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    viewed = otel_callbacks("view", "-a", str(demo[1]))
    assert viewed.returncode == 0, viewed.stderr
    assert "gen_ai.request.model = scripted-chat-1" in viewed.stdout
    assert "gen_ai.usage.output_tokens = " in viewed.stdout
    assert re.search(rf"event \+{DURATION} exception", viewed.stdout)
    assert re.search(rf"event \+{DURATION} gen_ai.first_token", viewed.stdout)


def test_view_trace_id_filter(demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    both = tmp_path / "both.jsonl"
    first = demo[1].read_text()
    other = json.loads(first.splitlines()[0])
    for span in other["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["traceId"] = "ab" * 16
    both.write_text(first + json.dumps(other) + "\n")
    assert otel_callbacks("view", str(both)).stdout.count("\ntrace ") + 1 >= 2
    only = otel_callbacks("view", str(both), "--trace-id", "abab")
    assert only.returncode == 0 and only.stdout.count("trace ") == 1 and "abab" in only.stdout
    missing = otel_callbacks("view", str(both), "--trace-id", "ffff")
    assert missing.returncode == 1 and missing.stderr == f"otel-callbacks: error: {both}: no trace with id ffff\n"


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read {path}: No such file or directory"),
    ("{not json\n", "{path}:1: not an OTLP/JSON trace line"),
    ('{"resourceSpans": []}\n{"hello": 1}\n', "{path}:2: not an OTLP/JSON trace line (no resourceSpans list)"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}\n', "{path}:1: not an OTLP/JSON"),
    ("", "{path}: no spans found"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "{path}: not a text file"),
])
def test_bad_files_give_one_line_and_fail(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "traces.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = otel_callbacks("view", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("otel-callbacks: error: " + message.format(path=path))


def test_unreachable_endpoint_does_not_block_the_demo() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = otel_callbacks("demo", "--endpoint", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert [name for _, name, _ in span_lines(result.stdout)] == [name for _, name in DEMO_TREE]
    assert "7 spans shown above" in result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == (f"otel-callbacks: 7 of 7 spans could not be sent to "
                        f"http://127.0.0.1:{port}/v1/traces (otlp http/protobuf); is it reachable?")
    assert re.fullmatch(rf"otel-callbacks: \d+ metric points could not be sent to "
                        rf"http://127\.0\.0\.1:{port}/v1/metrics \(otlp http/protobuf\) "
                        rf"\(a traces-only backend refuses them; a collector takes both\)",
                        lines[1]), lines
    assert len(lines) == 2


@pytest.mark.parametrize("accepts_metrics", [True, False], ids=["collector", "traces-only"])
def test_demo_sends_traces_and_metrics_to_the_endpoint(accepts_metrics: bool) -> None:
    # A minimal OTLP/HTTP receiver: it stores each request body by path and answers 200
    # (404 for metrics when it plays a traces-only backend such as Jaeger or Phoenix).
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: dict[str, list[bytes]] = {}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/metrics" and not accepts_metrics:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            received.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = otel_callbacks("demo", "--endpoint", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr  # the spans arrived: that decides the status
    spans = [span for body in received["/v1/traces"]
             for rs in ExportTraceServiceRequest.FromString(body).resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    assert len(spans) == 7
    if not accepts_metrics:
        assert "/v1/metrics" not in received
        assert re.fullmatch(r"otel-callbacks: \d+ metric points could not be sent to \S+ "
                            r"\(otlp http/protobuf\) \(a traces-only backend refuses them; a "
                            r"collector takes both\)\n", result.stderr), result.stderr
        return
    assert result.stderr == ""
    points: dict[str, int] = {}
    services = set()
    for body in received["/v1/metrics"]:
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            services |= {a.value.string_value for a in rm.resource.attributes if a.key == "service.name"}
            for sm in rm.scope_metrics:
                assert sm.scope.name == "otel_callbacks"
                for metric in sm.metrics:
                    points[metric.name] = points.get(metric.name, 0) + len(metric.histogram.data_points)
    assert services == {"otel-callbacks-demo"}
    # Four model runs (one failed, one streamed) and one tool run.
    assert set(points) >= {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                           "gen_ai.client.operation.time_to_first_chunk", "langchain.tool.duration"}
    assert f"{sum(points.values())} metric points sent to http://127.0.0.1:{server.server_port}" \
        f"/v1/metrics (otlp http/protobuf)" in result.stdout


def test_colour_with_rich_and_plain_without(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    coloured = otel_callbacks("view", "--color", "always", str(demo[1]))
    assert "\x1b[" in coloured.stdout
    code = ("import sys; sys.modules['rich'] = None; from otel_callbacks.cli import main; "
            f"sys.exit(main(['view', '--color', 'always', {str(demo[1])!r}]))")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and "\x1b[" not in plain.stdout
    assert span_lines(plain.stdout)


def test_ascii_terminal_gets_ascii_tree(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result = otel_callbacks("view", str(demo[1]), PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr
    assert "|-- retrieval KnowledgeBase" in result.stdout and "`-- chat scripted-chat-1" in result.stdout


def test_render_orders_children_and_keeps_orphans(capsys: pytest.CaptureFixture[str]) -> None:
    def span(span_id: str, name: str, start: int, end: int, parent: str | None = None) -> SpanRecord:
        return SpanRecord("1" * 32, span_id, parent, name, 1, start, end)

    records = [span("b" * 16, "second", 50_000_000, 90_000_000, "a" * 16),
               span("a" * 16, "root", 0, 100_000_000),
               span("c" * 16, "first", 10_000_000, 20_000_000, "a" * 16),
               span("d" * 16, "orphan", 95_000_000, 99_000_000, "f" * 16)]
    write(render(records, glyphs=ASCII))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("trace " + "1" * 32) and "4 spans" in lines[0]
    assert [line.split("  ")[0].rstrip() for line in lines[1:]] == [
        "root", "|-- first", "`-- second", "orphan"]
    assert "100.0 ms" in lines[1] and "10.0 ms" in lines[2]

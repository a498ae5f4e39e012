"""Arize Phoenix as a real OTLP backend for the end-to-end tests.

Phoenix runs from its own virtualenv (``scripts/setup-phoenix-venv.sh``): it is never a
dependency of otel-callbacks. Spans are read back through Phoenix's REST API,
``GET /v1/projects/<project>/spans``, whose answer is::

    {"data": [span, ...], "next_cursor": "<opaque>" | null}

    span = {
      "id": "<Phoenix global id>",
      "name": "chat fake-model",
      "context": {"trace_id": "<32 hex>", "span_id": "<16 hex>"},
      "parent_id": "<16 hex>" | null,          # the parent's span_id
      "span_kind": "LLM" | "CHAIN" | "TOOL" | "RETRIEVER" | ... | "UNKNOWN",
      "start_time": "<ISO 8601>", "end_time": "<ISO 8601>",
      "status_code": "OK" | "ERROR" | "UNSET", "status_message": "<str>",
      "attributes": {"flat.dotted.key": value, ...},
      "events": [{"name": "...", "timestamp": "<ISO 8601>", "attributes": {...}}, ...],
    }

``span_kind`` is Phoenix's OpenInference kind, not the OTel ``SpanKind``: Phoenix does not keep
the OTel kind (its ``/spans/otlpv1`` view reports every span as ``SPAN_KIND_INTERNAL``), so
tests check the OTel kind on the exporting side instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phoenix_venv() -> Path:
    return Path(os.environ.get("PHOENIX_VENV") or REPO_ROOT / ".venv-phoenix")


class PhoenixError(RuntimeError):
    pass


@dataclass
class PhoenixServer:
    """One ``phoenix serve`` process; restartable on the same ports and working dir."""

    executable: Path
    working_dir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    startup_timeout: float = 120.0
    process: subprocess.Popen | None = None
    _log: Any = None

    # --- addresses --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"{self.base_url}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.working_dir / "phoenix-server.log"

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise PhoenixError("already running")
        self.working_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PHOENIX_HOST": self.host,
            "PHOENIX_PORT": str(self.http_port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.working_dir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        # Keep the test process's own OTel settings from leaking into Phoenix.
        for key in list(env):
            if key.startswith("OTEL_"):
                del env[key]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.executable), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PhoenixError(
                    f"phoenix exited with {self.process.returncode}; log tail:\n{self.log_tail()}"
                )
            if self._http_ok() and self._grpc_accepts():
                return
            time.sleep(0.25)
        self.stop()
        raise PhoenixError(f"phoenix not ready after {self.startup_timeout}s; log tail:\n{self.log_tail()}")

    def _http_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _grpc_accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.grpc_port), timeout=1):
                return True
        except OSError:
            return False

    def is_up(self) -> bool:
        return self.process is not None and self.process.poll() is None and self._http_ok()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL if it lingers."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        # Both ports must be free again before a restart reuses them.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self._grpc_accepts() or self._http_ok()):
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    # --- reading spans ----------------------------------------------------------------------
    def _get(self, path: str, params: list[tuple[str, str]]) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def spans(
        self, *, trace_ids: Iterable[str] = (), project: str = "default", page_size: int = 100
    ) -> list[dict]:
        """Every span of ``project`` (optionally only of ``trace_ids``), following ``next_cursor``."""
        base: list[tuple[str, str]] = [("limit", str(page_size))]
        base += [("trace_id", t) for t in trace_ids]
        out: list[dict] = []
        cursor = None
        while True:
            params = base + ([("cursor", cursor)] if cursor else [])
            try:
                page = self._get(f"/v1/projects/{project}/spans", params)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # the project appears with its first span
                    return []
                raise
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def wait_for_spans(
        self,
        trace_ids: Iterable[str],
        expected: int | Callable[[list[dict]], bool],
        *,
        timeout: float = 30.0,
        settle: float = 0.5,
    ) -> list[dict]:
        """Poll until ``expected`` spans (or a predicate) hold for ``trace_ids``; then check
        that no further spans arrive during ``settle`` seconds."""
        trace_ids = list(trace_ids)
        ok = expected if callable(expected) else (lambda spans: len(spans) >= expected)
        deadline = time.monotonic() + timeout
        spans: list[dict] = []
        while time.monotonic() < deadline:
            spans = self.spans(trace_ids=trace_ids)
            if ok(spans):
                time.sleep(settle)
                return self.spans(trace_ids=trace_ids)
            time.sleep(0.25)
        raise AssertionError(
            f"timed out after {timeout}s waiting for spans of {trace_ids}: have {len(spans)}: "
            f"{sorted(s['name'] for s in spans)}"
        )

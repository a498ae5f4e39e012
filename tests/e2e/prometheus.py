"""Debian's ``prometheus`` binary as a real metrics store for the end-to-end tests.

Started here on a free loopback port from a temporary config, never through the Debian
package's own service, and stopped by its pid. ``PROMETHEUS_BIN`` picks the binary (default:
``prometheus`` on PATH; ``scripts/ci-e2e.sh`` installs it with apt).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .phoenix import free_port


class PrometheusError(RuntimeError):
    pass


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


@dataclass
class PrometheusServer:
    """One ``prometheus`` process scraping ``targets`` every second."""

    executable: str
    working_dir: Path
    targets: list[str]
    port: int = field(default_factory=free_port)
    startup_timeout: float = 60.0
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.working_dir.mkdir(parents=True, exist_ok=True)
        config = self.working_dir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "app", "honor_labels": True,
                                "static_configs": [{"targets": self.targets}]}],
        }))
        log = open(self.working_dir / "prometheus.log", "ab")
        # The same features as the compose service: exemplars and the remote-write receiver.
        self.process = subprocess.Popen(
            [self.executable, f"--config.file={config}",
             f"--storage.tsdb.path={self.working_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n"
                                      f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {self.startup_timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM by pid, then SIGKILL if it lingers."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        path = self.working_dir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # --- HTTP API ---------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why
            raise PrometheusError(f"{path} {params}: {exc.code} {exc.read().decode()}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result of ``expr`` now: [{"metric": labels, "value": [t, "v"]}]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data["resultType"]
        return data["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})

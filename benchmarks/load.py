"""Production load: a LangGraph agent served to N concurrent asyncio clients, exported for real.

    python -m benchmarks.load                        # N=64 clients, 1,280 requests, gRPC and HTTP
    python -m benchmarks.load --clients 64 --requests 2000 --protocols grpc --rounds 3
    python -m benchmarks.load --sweep                # where the batch processor starts dropping

Each (variant, protocol) runs in its own process against a fresh OTLP receiver on loopback
(rotel, a collector from PyPI, started and stopped here by pid; without it a counting receiver
in its own process). The tracing variants export through ``configure_tracing()``'s defaults
(BatchSpanProcessor -> OTLP gRPC or HTTP). Reported: requests/s, process CPU seconds per request
(all threads, export included) and over no tracing, p50/p99 request latency, spans produced and
spans the receiver got. Process CPU time, not wall time, so the per-request cost survives a
shared machine; requests/s and latency do not, read them as indications.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import REPO, _env, default_python

RESULT_PREFIX = "LOAD_RESULT "
VARIANTS = ("none", "otel_callbacks", "openllmetry", "openinference")
PROTOCOLS = ("grpc", "http")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RECEIVED = re.compile(r"Received traces\..*?\bspans=(\d+)")


# ---------------------------------------------------------------------------
# The receiver: rotel if installed, else benchmarks.receiver (same counting contract).


def rotel_binary() -> str | None:
    try:
        import rotel  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return str(path) if path.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """An OTLP receiver in its own process, started and stopped by pid; counts spans received."""

    def __init__(self, python: str, prefer_rotel: bool = True) -> None:
        self.grpc_port, self.http_port = _free_port(), _free_port()
        self.log = Path(tempfile.mkstemp(prefix="load-receiver-", suffix=".log")[1])
        binary = rotel_binary() if prefer_rotel else None
        if binary:
            self.kind = "rotel"
            cmd = [binary, "start", "--exporter", "blackhole", "--debug-log", "traces",
                   "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                   "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                   "--otlp-grpc-max-recv-msg-size-mib", "64",
                   "--pid-file", str(self.log) + ".pid", "--log-file", str(self.log) + ".agent"]
        else:
            self.kind = "counting receiver (opentelemetry-proto gRPC + http.server)"
            cmd = [python, "-m", "benchmarks.receiver", str(self.grpc_port), str(self.http_port)]
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=self._out,
                                     stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 15
        for port in (self.grpc_port, self.http_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"receiver did not start: {self.log.read_text()[-500:]}")
                    time.sleep(0.05)

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def stop(self) -> int:
        """Stop by pid (SIGTERM, then SIGKILL) and return the spans it received."""
        time.sleep(0.3)  # the last response is written before its log line
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        text = _ANSI.sub("", self.log.read_text(errors="replace"))
        for suffix in ("", ".pid", ".agent"):
            Path(str(self.log) + suffix).unlink(missing_ok=True)
        return sum(int(m) for m in _RECEIVED.findall(text))


# ---------------------------------------------------------------------------
# One measurement process: one variant, one protocol.


def _setup(variant: str, protocol: str, endpoint: str, sdk_defaults: bool) -> tuple[Any, dict, Any]:
    """(provider or None, per-call config, the span counter)."""
    if variant == "none":
        return None, {}, None
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_callbacks.config import configure_tracing, otlp_destination

    class Counter(SpanProcessor):
        ended = 0

        def on_end(self, span: Any) -> None:
            self.ended += 1

    if sdk_defaults:  # the SDK's own BatchSpanProcessor and defaults, for the drop sweep
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(otlp_destination(endpoint, protocol).exporter))
    else:
        provider = configure_tracing(endpoint=endpoint, protocol=protocol, set_global=False)
    counter = Counter()
    provider.add_span_processor(counter)
    if variant == "otel_callbacks":
        from otel_callbacks import OTelHandler

        return provider, {"callbacks": [OTelHandler(tracer_provider=provider)]}, counter
    from benchmarks.common import setup_variant

    return provider, setup_variant(variant, provider).config, counter


async def _serve(app: Any, config: dict, clients: int, requests: int) -> list[float]:
    from benchmarks.agent import one_request

    latencies: list[float] = []
    remaining = iter(range(requests))

    async def client() -> None:
        for _ in remaining:  # shared iterator: each request is taken by exactly one client
            t0 = time.perf_counter()
            await one_request(app, config)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _dropped(provider: Any) -> int | None:
    if provider is None:
        return None
    processors = getattr(provider._active_span_processor, "_span_processors", ())
    counts = [p.dropped_spans for p in processors if hasattr(p, "dropped_spans")]
    return sum(counts) if counts else None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.agent import build_agent

    provider, config, counter = _setup(args.variant, args.protocol, args.endpoint, args.sdk_defaults)
    app = build_agent(args.latency, args.tool_calls)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_serve(app, config, args.clients, args.clients))  # warm-up
    if provider is not None:
        provider.force_flush()
    c0, t0 = time.process_time(), time.perf_counter()
    latencies = loop.run_until_complete(_serve(app, config, args.clients, args.requests))
    wall = time.perf_counter() - t0
    if provider is not None:
        provider.force_flush()  # the export work belongs to the requests' cost
    cpu = time.process_time() - c0
    result = {"variant": args.variant, "protocol": args.protocol, "requests": args.requests,
              "clients": args.clients, "wall_s": wall, "cpu_s": cpu,
              "p50_s": statistics.median(latencies),
              "p99_s": statistics.quantiles(latencies, n=100)[98],
              "produced": counter.ended if counter else 0, "dropped": _dropped(provider)}
    if provider is not None:
        provider.shutdown()
    return result


# ---------------------------------------------------------------------------
# The orchestrator.


def run_one(python: str, variant: str, protocol: str, args: argparse.Namespace,
            sdk_defaults: bool = False, clients: int | None = None) -> dict[str, Any]:
    receiver = Receiver(python, prefer_rotel=not args.counting_receiver)
    cmd = [python, "-m", "benchmarks.load", "--worker", "--variant", variant, "--protocol", protocol,
           "--endpoint", receiver.endpoint(protocol), "--clients", str(clients or args.clients),
           "--requests", str(args.requests), "--latency", str(args.latency),
           "--tool-calls", str(args.tool_calls)]
    if sdk_defaults:
        cmd.append("--sdk-defaults")
    try:
        worker = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        if args.stall:  # the collector stops answering for a while, as under a network fault
            time.sleep(args.stall_after)
            os.kill(receiver.proc.pid, signal.SIGSTOP)
            time.sleep(args.stall)
            os.kill(receiver.proc.pid, signal.SIGCONT)
        stdout, stderr = worker.communicate(timeout=args.timeout)
        proc = subprocess.CompletedProcess(cmd, worker.returncode, stdout, stderr)
    finally:
        received = receiver.stop()
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            result["received"] = received
            result["receiver"] = receiver.kind
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
    return {"variant": variant, "protocol": protocol, "crashed": tail, "received": received}


def _fmt_row(r: dict[str, Any], base_cpu: float | None) -> str:
    per_req = r["cpu_s"] / r["requests"]
    over = f"{(per_req - base_cpu) * 1e3:+8.2f} ms" if base_cpu is not None else "       -   "
    produced = r["produced"]  # warm-up requests are produced and received too
    lost = "" if r["variant"] == "none" else (
        "all received" if r["received"] == produced else f"LOST {produced - r['received']}")
    dropped = "" if r.get("dropped") is None else f" (queue drops {r['dropped']})"
    return (f"{r['variant']:<15} {r['protocol']:<5} {r['requests'] / r['wall_s']:9.1f} "
            f"{per_req * 1e3:9.2f} ms {over:>12} {r['p50_s'] * 1e3:8.1f} ms {r['p99_s'] * 1e3:8.1f} ms "
            f"{produced:>9} {r['received']:>9}  {lost}{dropped}")


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [f"clients N={args.clients}, {args.requests} requests (+{args.clients} warm-up) per process, "
           f"model latency {args.latency * 1e3:.0f} ms x 2 calls and {args.tool_calls} tool calls "
           f"per request, rounds {args.rounds}; "
           f"receiver: {results[0].get('receiver', '?') if results else '?'}",
           "cpu/request = process CPU time (all threads: app + batch export + OTLP encoding) / requests;",
           "spans count warm-up requests too (produced = ended in the provider, received = by the receiver)",
           "",
           f"{'variant':<15} {'proto':<5} {'req/s':>9} {'cpu/request':>12} {'over none':>12} "
           f"{'p50':>11} {'p99':>11} {'produced':>9} {'received':>9}",
           "-" * 110]
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if "crashed" not in r:
            grouped.setdefault((r["variant"], r["protocol"]), []).append(r)
    merged = {}
    for key, rs in grouped.items():  # medians over rounds; spans summed over rounds
        merged[key] = {**rs[0], "wall_s": statistics.median(x["wall_s"] for x in rs),
                       "cpu_s": statistics.median(x["cpu_s"] for x in rs),
                       "p50_s": statistics.median(x["p50_s"] for x in rs),
                       "p99_s": statistics.median(x["p99_s"] for x in rs),
                       "produced": sum(x["produced"] for x in rs),
                       "received": sum(x["received"] for x in rs),
                       "dropped": None if rs[0].get("dropped") is None else sum(x["dropped"] for x in rs)}
    overs: dict[str, dict[str, float]] = {}
    for protocol in args.protocol_list:
        base = merged.get(("none", protocol))
        base_cpu = base["cpu_s"] / base["requests"] if base else None
        for variant in args.variant_list:
            r = merged.get((variant, protocol))
            if r is None:
                out.append(f"{variant:<15} {protocol:<5} no data")
                continue
            out.append(_fmt_row(r, base_cpu))
            if base_cpu is not None and variant != "none":
                overs.setdefault(protocol, {})[variant] = r["cpu_s"] / r["requests"] - base_cpu
        out.append("")
    for protocol, by_variant in overs.items():
        ranked = sorted(by_variant.items(), key=lambda kv: kv[1])
        out.append(f"{protocol}: CPU over no tracing per request, lowest first: "
                   + ", ".join(f"{v} {o * 1e3:.2f} ms" for v, o in ranked))
    for r in results:
        if "crashed" in r:
            out.append(f"CRASHED {r['variant']} {r['protocol']}:\n{r['crashed']}")
    return "\n".join(out)


def sweep(args: argparse.Namespace, python: str) -> None:
    """Our handler under rising concurrency, SDK-default batching vs configure_tracing()'s."""
    print(f"sweep: otel_callbacks, {args.requests} requests, model latency {args.latency * 1e3:.0f} ms, "
          f"{args.tool_calls} tool calls per request, protocol {args.protocol_list[0]}, "
          f"receiver stalled {args.stall:.0f} s")
    print(f"{'batching':<20} {'clients':>7} {'spans/s':>9} {'produced':>9} {'received':>9} "
          f"{'lost':>7} {'queue drops':>11}")
    for clients in args.sweep_clients:
        for sdk_defaults in (True, False):
            r = run_one(python, "otel_callbacks", args.protocol_list[0], args, sdk_defaults, clients)
            if "crashed" in r:
                print(f"crashed: {r['crashed']}")
                continue
            name = "SDK defaults" if sdk_defaults else "configure_tracing()"
            rate = r["produced"] * r["requests"] / (r["requests"] + clients) / r["wall_s"]
            drops = "-" if r.get("dropped") is None else r["dropped"]
            print(f"{name:<20} {clients:>7} {rate:9.0f} {r['produced']:>9} {r['received']:>9} "
                  f"{r['produced'] - r['received']:>7} {drops:>11}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=1280)
    ap.add_argument("--latency", type=float, default=0.01, help="seconds per model call")
    ap.add_argument("--tool-calls", type=int, default=2, help="tool runs the model asks for per request")
    ap.add_argument("--stall", type=float, default=0.0,
                    help="SIGSTOP the receiver for this many seconds during the run (a collector fault)")
    ap.add_argument("--stall-after", type=float, default=3.0, help="seconds after the worker starts")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians reported)")
    ap.add_argument("--sweep", action="store_true", help="find where the batch processor drops")
    ap.add_argument("--sweep-clients", default="16,64,256,1024")
    ap.add_argument("--counting-receiver", action="store_true", help="use benchmarks.receiver, not rotel")
    ap.add_argument("--python", default=None)
    ap.add_argument("--timeout", type=float, default=900)
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--protocol", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--sdk-defaults", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        sys.stdout.write(RESULT_PREFIX + json.dumps(measure(args)) + "\n")
        return 0
    python = args.python or default_python()
    args.variant_list = [v for v in args.variants.split(",") if v]
    args.protocol_list = [p for p in args.protocols.split(",") if p]
    if args.sweep:
        args.sweep_clients = [int(c) for c in args.sweep_clients.split(",")]
        sweep(args, python)
        return 0
    results = []
    print(f"python: {python}; load average {os.getloadavg()[0]:.1f}", flush=True)
    for rnd in range(1, args.rounds + 1):
        for protocol in args.protocol_list:
            for variant in args.variant_list:
                r = run_one(python, variant, protocol, args)
                results.append(r)
                print(f"  round {rnd} {variant} {protocol}: "
                      + ("crashed" if "crashed" in r else
                         f"{r['cpu_s'] / r['requests'] * 1e3:.2f} ms cpu/request, "
                         f"{r['produced']} produced, {r['received']} received"), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(table(results, args))
    return 1 if any("crashed" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

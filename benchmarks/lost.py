"""Nothing-lost check: every span the handler starts reaches the exporter.

    python -m benchmarks.lost [--variant otel_callbacks] [--runs 10000]

1. In process: BatchSpanProcessor + counting exporter; N chain invocations
   (plus an abatch phase for the async path) ending normally; after
   force_flush, exported == started (counted by a SpanProcessor.on_start).
2. Subprocess: the same without any flush; the interpreter exits and the
   TracerProvider's atexit shutdown must export everything.  A second child
   also leaves runs open at exit (the handler should end and export them).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from uuid import uuid4

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.common import VariantUnavailable, setup_variant

REPO = Path(__file__).resolve().parent.parent


class StartEndCounter(SpanProcessor):
    def __init__(self) -> None:
        self._started = itertools.count()
        self._ended = itertools.count()
        self.started = 0
        self.ended = 0

    def on_start(self, span, parent_context=None) -> None:
        self.started = next(self._started) + 1

    def on_end(self, span) -> None:
        self.ended = next(self._ended) + 1


class CountingExporter(SpanExporter):
    """Counts exported spans; optionally appends each batch size to a file."""

    def __init__(self, path: str | None = None) -> None:
        self.count = 0
        self.path = path

    def export(self, spans) -> SpanExportResult:
        self.count += len(spans)
        if self.path:
            with open(self.path, "a") as f:
                f.write(f"{len(spans)}\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _chain():
    from langchain_core.runnables import RunnableLambda

    def a(x):
        return x + 1

    def b(x):
        return x * 2

    def c(x):
        return x - 1

    async def aa(x):
        return x + 1

    async def ab(x):
        return x * 2

    return RunnableLambda(a) | RunnableLambda(b) | RunnableLambda(c), RunnableLambda(aa) | RunnableLambda(ab)


def in_process(variant: str, n: int) -> bool:
    tp = TracerProvider(shutdown_on_exit=False)
    counter = StartEndCounter()
    exporter = CountingExporter()
    tp.add_span_processor(counter)
    # Queue sized to hold every span: the check is about the handler ending what
    # it starts, not about the processor's deliberate drop-when-full policy.
    tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=max(2048, 6 * n)))
    v = setup_variant(variant, tp)
    sync_chain, async_chain = _chain()
    for i in range(n):
        sync_chain.invoke(i, v.config)
    batch = list(range(20))
    loop = asyncio.new_event_loop()
    for _ in range(max(1, n // 100)):
        loop.run_until_complete(async_chain.abatch(batch, v.config))
    loop.close()
    expected = n * 4 + max(1, n // 100) * 20 * 3
    tp.force_flush()
    ok = exporter.count == counter.started == counter.ended == expected
    print(
        f"[lost] in-process, variant={variant}: {n:,} invokes + {max(1, n // 100)} abatch(20): expected {expected:,} "
        f"spans; started {counter.started:,}, ended {counter.ended:,}, exported after force_flush "
        f"{exporter.count:,}: {'PASS' if ok else 'FAIL'}"
    )
    tp.shutdown()
    return ok


_KEEP_ALIVE: list = []


def child(variant: str, n: int, path: str, leave_open: int, drop_handler: bool) -> None:
    """Subprocess body: no flush, no shutdown; exits and relies on atexit.

    The handler stays referenced until exit (as an app's module-level handler
    would) unless ``drop_handler``: then it is garbage once this returns.
    """
    tp = TracerProvider()  # shutdown_on_exit=True (the default) registers the atexit shutdown
    counter = StartEndCounter()
    tp.add_span_processor(counter)
    # Long delay so the batch worker exports nothing on its own before exit
    # unless a full batch accumulates.
    tp.add_span_processor(BatchSpanProcessor(CountingExporter(path), schedule_delay_millis=60_000))
    v = setup_variant(variant, tp)
    if not drop_handler:
        _KEEP_ALIVE.append(v)
    sync_chain, _ = _chain()
    for i in range(n):
        sync_chain.invoke(i, v.config)
    if leave_open:
        h = v.handler
        for _ in range(leave_open):
            h.on_chain_start({"name": "never_ends"}, {"input": 1}, run_id=uuid4(), parent_run_id=None)
    print(f"STARTED {counter.started} ENDED {counter.ended}", flush=True)
    # fall off the end: the interpreter exits here


def at_exit(variant: str, n: int, leave_open: int, drop_handler: bool = False, info_only: bool = False) -> bool:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "exported.txt")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.lost",
            "--child",
            path,
            "--variant",
            variant,
            "--runs",
            str(n),
            "--leave-open",
            str(leave_open),
        ] + (["--drop-handler"] if drop_handler else [])
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        started = ended = -1
        for line in proc.stdout.splitlines():
            if line.startswith("STARTED "):
                parts = line.split()
                started, ended = int(parts[1]), int(parts[3])
        batches = [int(x) for x in Path(path).read_text().split()] if os.path.exists(path) else []
        exported = sum(batches)
    ok = proc.returncode == 0 and started == n * 4 + leave_open and exported == started
    what = f"{n:,} invokes" + (f" + {leave_open} runs left open" if leave_open else "")
    if drop_handler:
        what += ", handler unreferenced before exit"
    verdict = ("ok" if ok else "LOST") + " (informational)" if info_only else ("PASS" if ok else "FAIL")
    print(
        f"[lost] at interpreter exit, variant={variant}: {what}; started {started:,}, ended before exit {ended:,}, "
        f"exported by exit {exported:,} in {len(batches)} batches (exit code {proc.returncode}): "
        f"{verdict}"
    )
    if proc.returncode != 0:
        print("  " + "\n  ".join(proc.stderr.strip().splitlines()[-10:]))
    return ok or info_only


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", default="otel_callbacks")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--child", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--leave-open", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--drop-handler", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.variant, args.runs, args.child, args.leave_open, args.drop_handler)
        return 0
    try:
        results = [
            in_process(args.variant, args.runs),
            at_exit(args.variant, 100, 0),  # 400 spans: below one batch, only the exit flush exports them
            at_exit(args.variant, 1_000, 0),  # 4,000 spans: several batches plus the remainder at exit
        ]
        if args.variant.startswith("otel_callbacks"):
            results.append(at_exit(args.variant, 100, 25))  # open runs ended by the handler at exit
            # Same, but nothing references the handler any more at exit (reported, not judged).
            results.append(at_exit(args.variant, 100, 25, drop_handler=True, info_only=True))
    except VariantUnavailable as exc:
        print(f"[lost] {args.variant}: skipped ({exc})")
        return 0
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

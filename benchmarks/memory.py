"""Memory modes: bytes held per open run (tracemalloc) and an RSS soak.

    python -m benchmarks.memory open-runs [--variant otel_callbacks] [--runs 10000]
    python -m benchmarks.memory soak [--variant otel_callbacks] [--runs 1000000]

The handler's callbacks are called directly, with uuid run ids and the keyword
arguments LangChain passes, so only the handler's own cost is measured.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import tracemalloc
from uuid import uuid4

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.common import VariantUnavailable, make_provider, setup_variant

SERIALIZED = {"name": "bench_chain", "id": ["bench", "BenchChain"]}
INPUTS = {"input": "hello"}  # shared: the app owns its inputs, we measure what the handler keeps
OUTPUTS = {"output": "world"}


def make_handler(variant: str, tp: TracerProvider, open_runs_cap: int | None = None):
    """The callback handler of ``variant``, bound to ``tp``.

    For otel_callbacks, ``open_runs_cap`` raises its open-run bound (when the
    constructor has one) so a measurement is not cut short by eviction.
    """
    ours = variant in ("otel_callbacks", "otel_callbacks_content") and open_runs_cap
    v = setup_variant(variant, tp, **({"max_open_runs": open_runs_cap} if ours else {}))
    if v.handler is None:
        raise VariantUnavailable(f"variant {variant} has no callback handler to drive")
    return v.handler


def start(h, run_id, parent_run_id=None):
    h.on_chain_start(
        SERIALIZED, INPUTS, run_id=run_id, parent_run_id=parent_run_id, tags=[], metadata={}, name="bench_chain"
    )


def end(h, run_id, parent_run_id=None):
    h.on_chain_end(OUTPUTS, run_id=run_id, parent_run_id=parent_run_id, tags=[])


def error(h, run_id, parent_run_id=None):
    h.on_chain_error(ValueError("soak failure"), run_id=run_id, parent_run_id=parent_run_id, tags=[])


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# ---------------------------------------------------------------------------


def open_runs(variant: str, n: int) -> int:
    """tracemalloc growth per run started and never ended: first N roots, then N children."""
    tp, exporter = make_provider()
    try:
        h = make_handler(variant, tp, open_runs_cap=2 * n + 100)
    except VariantUnavailable as exc:
        print(f"[memory] {variant}: skipped ({exc})")
        return 0
    # Warm-up: lazily built caches, interned strings, code paths.
    for _ in range(500):
        rid, cid = uuid4(), uuid4()
        start(h, rid)
        start(h, cid, rid)
        end(h, cid, rid)
        end(h, rid)
    exporter.clear()
    root = uuid4()
    start(h, root)
    rows = []
    for shape, parent in (("root runs", None), ("child runs of one open root", root)):
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            start(h, uuid4(), parent)  # no end: the run stays open
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rows.append((shape, (after - before) / n, len(exporter.get_finished_spans())))
        exporter.clear()
    print(f"[memory] bytes held per open run, variant={variant}, N={n} (tracemalloc, after gc)")
    for shape, per_run, ended_early in rows:
        extra = f"  ({ended_early} spans ended meanwhile, e.g. evicted)" if ended_early else ""
        print(f"  {shape:<30} {per_run:8.0f} B/run{extra}")
    return 0


class DiscardExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _open_runs_cap(variant: str, h, override: int | None) -> int | None:
    """The handler's bound on open runs, when it has one we can read."""
    if override:
        return override
    if not variant.startswith("otel_callbacks"):
        return None
    return getattr(getattr(h, "_registry", None), "max_open_runs", None)


def soak(variant: str, n: int, abandon_every: int, error_every: int, tolerance: float, max_open: int | None) -> int:
    """N runs in traces of root + 2 children; errors and never-ended runs mixed in.

    Per trace k: child A ends; child B errors every ``error_every``-th trace;
    every ``abandon_every``-th trace leaves child B open (its root ends), and
    the trace halfway between leaves root and child B open for good.

    Never-ended runs are held until the handler's open-run bound evicts them,
    so memory legitimately grows until that bound is reached.  The warm-up
    therefore lasts until the bound is full (plus 20%), and only growth after
    that counts against the tolerance.
    """
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)  # "Queue full" spam
    tp = TracerProvider(shutdown_on_exit=False)
    exporter = DiscardExporter()
    tp.add_span_processor(BatchSpanProcessor(exporter))
    try:
        if max_open and variant.startswith("otel_callbacks"):
            h = make_handler(variant, tp, open_runs_cap=max_open)
        else:
            h = make_handler(variant, tp)
    except VariantUnavailable as exc:
        print(f"[soak] {variant}: skipped ({exc})")
        return 0
    traces = max(1, n // 3)
    half = abandon_every // 2
    cap = _open_runs_cap(variant, h, max_open)
    forever_per_trace = 2 / abandon_every  # runs never ended and never ended by a root
    if cap:
        warm_traces = int(cap / forever_per_trace * 1.2)
        why = f"until the handler's bound of {cap:,} open runs is full (+20%)"
    else:
        warm_traces = traces // 5
        why = "20% of the runs (no known open-run bound)"
    warm_traces = max(warm_traces, traces // 20, 1)
    if warm_traces >= traces * 0.8:
        print(f"[soak] warning: warm-up ({why}) needs {warm_traces * 3:,} runs; measuring the last 20% only")
        warm_traces = int(traces * 0.8)
    samples: list[tuple[int, int]] = []
    rss_warm = 0
    started = 0
    opened_forever = 0
    checkpoints = {warm_traces + (traces - warm_traces) * i // 10 for i in range(1, 11)}
    t0 = time.perf_counter()
    for k in range(traces):
        root, a, b = uuid4(), uuid4(), uuid4()
        start(h, root)
        start(h, a, root)
        end(h, a, root)
        start(h, b, root)
        started += 3
        if k % abandon_every == half:
            opened_forever += 2  # neither the root nor b ever ends
        else:
            if k % abandon_every != 0:
                (error if k % error_every == 0 else end)(h, b, root)
            else:
                opened_forever += 1  # b never ends; its root does
            (error if k % (error_every * 7) == 3 else end)(h, root)
        if k + 1 == warm_traces:
            gc.collect()
            rss_warm = rss_bytes()
            samples.append((started, rss_warm))
        elif k + 1 in checkpoints:
            gc.collect()
            samples.append((started, rss_bytes()))
    elapsed = time.perf_counter() - t0
    tp.force_flush()
    gc.collect()
    rss_end = rss_bytes()
    growth = (rss_end - rss_warm) / rss_warm
    ok = growth <= tolerance
    print(
        f"[soak] variant={variant} runs={started:,} ({traces:,} traces of 3; 1/{error_every} child errors, "
        f"1/{abandon_every} child never ended, 1/{abandon_every} trace never ended: {opened_forever:,} runs never ended)"
    )
    print(
        f"  {elapsed:.1f}s, {elapsed / started * 1e6:.1f} us per run (start+end, BatchSpanProcessor); "
        f"exported {exporter.count:,} spans (the processor drops when its queue is full)"
    )
    print(f"  warm-up: {warm_traces * 3:,} runs, {why}")
    print("  RSS samples (runs -> MiB): " + ", ".join(f"{r:,}->{b / 2**20:.1f}" for r, b in samples))
    print(
        f"  RSS after warm-up {rss_warm / 2**20:.1f} MiB, at end {rss_end / 2**20:.1f} MiB, "
        f"growth {growth * 100:+.1f}% (limit {tolerance * 100:.0f}%): {'PASS' if ok else 'FAIL'}"
    )
    tp.shutdown()
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    p1 = sub.add_parser("open-runs")
    p1.add_argument("--variant", default="otel_callbacks")
    p1.add_argument("--runs", type=int, default=10_000)
    p2 = sub.add_parser("soak")
    p2.add_argument("--variant", default="otel_callbacks")
    p2.add_argument("--runs", type=int, default=1_000_000)
    p2.add_argument("--abandon-every", type=int, default=20)
    p2.add_argument("--max-open-runs", type=int, default=None, help="override OTelHandler's open-run bound")
    p2.add_argument("--error-every", type=int, default=10)
    p2.add_argument("--tolerance", type=float, default=0.10)
    args = ap.parse_args(argv)
    if args.mode == "open-runs":
        return open_runs(args.variant, args.runs)
    return soak(args.variant, args.runs, args.abandon_every, args.error_every, args.tolerance, args.max_open_runs)


if __name__ == "__main__":
    sys.exit(main())

"""One measurement process: one variant, the requested workloads, then the raw span.

Run by benchmarks.run (one process per variant per round); prints one line
``BENCH_RESULT <json>`` on stdout.  ``--profile`` instead runs cProfile over
a workload and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import traceback

from benchmarks.common import (
    VariantUnavailable,
    make_provider,
    measure_raw_span,
    prepare_workload,
    package_versions,
    setup_variant,
    time_iterations,
)
from benchmarks.workloads import WORKLOADS

RESULT_PREFIX = "BENCH_RESULT "


def _measure(args) -> dict:
    tp, exporter = make_provider()
    result: dict = {"variant": args.variant, "versions": package_versions(), "workloads": {}}
    try:
        variant = setup_variant(args.variant, tp)
    except VariantUnavailable as exc:
        result["skipped"] = str(exc)
        return result
    result["note"] = variant.note
    for name in args.workloads.split(","):
        try:
            prepare_workload(variant, name)
            fn = WORKLOADS[name](variant.config)
            times, cpu, spans = time_iterations(
                fn, exporter, min_time=args.min_time, warmup_time=args.warmup_time, min_iters=args.min_iters
            )
            result["workloads"][name] = {
                "median_s": statistics.median(times),
                "median_cpu_s": statistics.median(cpu),
                "mean_cpu_s": statistics.fmean(cpu),  # sampled runs: every 10th iteration differs
                "iters": len(times),
                "spans": statistics.median(spans),
                "spans_min": min(spans),
                "spans_max": max(spans),
            }
        except Exception as exc:  # report, keep measuring the other workloads
            result["workloads"][name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        exporter.clear()
    if "stream1000" in result["workloads"] and "error" not in result["workloads"]["stream1000"]:
        # The stream moves by about 1 us per token between processes; the token alone does not.
        from benchmarks.token_dispatch import token_seconds

        result["token_alone_s"] = token_seconds(variant.config)
    # The yardstick, in the same process and provider setup.
    result["raw_span_s"], result["raw_span_cpu_s"] = measure_raw_span(tp, exporter, batches=args.raw_batches)
    return result


def _profile(args) -> None:
    tp, exporter = make_provider()
    try:
        variant = setup_variant(args.variant, tp)
    except VariantUnavailable as exc:
        print(f"variant {args.variant} unavailable: {exc}")
        sys.exit(2)
    name = args.workloads.split(",")[0]
    fn = WORKLOADS[name](variant.config)
    for _ in range(max(3, args.profile_iters // 10)):
        fn()
        exporter.clear()
    prof = cProfile.Profile()
    spans = 0
    for _ in range(args.profile_iters):
        prof.enable()
        fn()
        prof.disable()
        spans += len(exporter.get_finished_spans())
        exporter.clear()
    print(f"profile: variant={args.variant} workload={name} iterations={args.profile_iters} spans={spans}")
    sections = [("tottime", None), ("cumulative", None)]
    if args.profile_filter:
        sections.append(("tottime", args.profile_filter))
    for sort, pattern in sections:
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats(sort)
        if pattern:
            stats.print_stats(pattern, args.profile_top)
        else:
            stats.print_stats(args.profile_top)
        text = _short_paths(buf.getvalue())
        start = text.find("   ncalls")  # drop pstats' preamble
        title = f"functions matching {pattern!r}" if pattern else f"top {args.profile_top}"
        print(f"\n--- {title} by {sort} ---")
        print((text[start:] if start >= 0 else text).rstrip())


def _short_paths(text: str) -> str:
    """Trim interpreter / site-packages / repo prefixes so rows name package paths."""
    import site
    import sysconfig
    from pathlib import Path

    prefixes = {str(Path(__file__).resolve().parent.parent) + "/"}
    for p in [*site.getsitepackages(), sysconfig.get_paths()["stdlib"]]:
        prefixes.add(p.rstrip("/") + "/")
    for p in sorted(prefixes, key=len, reverse=True):
        text = text.replace(p, "")
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--workloads", required=True, help="comma-separated")
    ap.add_argument("--min-time", type=float, default=0.6, help="seconds of timed iterations per workload")
    ap.add_argument("--warmup-time", type=float, default=0.15)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--raw-batches", type=int, default=30)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-iters", type=int, default=200)
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--profile-filter", default="otel_callbacks")
    args = ap.parse_args(argv)
    if args.profile:
        _profile(args)
        return
    result = _measure(args)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Cost follows what is recorded: overhead per invocation with 10% parent-based sampling vs none.

    python -m benchmarks.sampling                    # instruction counts (callgrind): repeatable
    python -m benchmarks.sampling --timed --rounds 3 # process CPU time, interleaved rounds

Every variant runs each workload twice: with the default sampler (everything recorded) and with
``ParentBased(TraceIdRatioBased(0.1))`` over trace ids of which exactly every tenth is kept
(``benchmarks.common.SAMPLER_ENV``), so all variants see the same traces sampled. Overhead per
invocation = the variant's cost minus the do-nothing handler's (``noop``) under the same
sampler; the table gives both and their ratio (target for otel_callbacks: <= 0.35).
Iteration counts are multiples of ten traces, so each figure averages exactly 10% sampled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SAMPLER_ENV
from benchmarks.run import default_python

VARIANTS = ("noop", "sdk_floor", "otel_callbacks", "openllmetry", "openinference")
WORKLOADS = ("seq5", "prompt_chat", "nest20", "abatch20", "graph_loop")
# Iterations per counted process: 20 traces at least (abatch20 makes 20 traces per iteration).
ITERATIONS = {"seq5": 20, "prompt_chat": 20, "nest20": 20, "abatch20": 5, "graph_loop": 20}
SAMPLERS = ("all", "ratio10")


def _with_sampler(sampler: str) -> None:
    if sampler == "all":
        os.environ.pop(SAMPLER_ENV, None)
    else:
        os.environ[SAMPLER_ENV] = sampler


def count_all(python: str, variants: list[str], workloads: list[str], jobs: int) -> dict:
    from benchmarks.instructions import count

    def one(key: tuple[str, str, str]) -> dict[str, Any]:
        sampler, variant, workload = key
        env = dict(os.environ)
        env.pop(SAMPLER_ENV, None)
        if sampler != "all":
            env[SAMPLER_ENV] = sampler
        # count() passes os.environ through; each call sets its own copy for its subprocess.
        return count(python, variant, workload, ITERATIONS[workload], env=env)

    keys = [(s, v, w) for w in workloads for v in variants for s in SAMPLERS]
    print(f"counting instructions: {len(keys)} processes under callgrind, {jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(keys, pool.map(one, keys)))


def time_all(python: str, variants: list[str], workloads: list[str], rounds: int) -> dict:
    from benchmarks.run import run_worker

    args = argparse.Namespace(min_time=1.0, warmup_time=0.2, raw_batches=3, timeout=900)
    samples: dict[tuple[str, str, str], list[float]] = {}
    for rnd in range(1, rounds + 1):
        for sampler in SAMPLERS:
            _with_sampler(sampler)
            for variant in variants:
                res = run_worker(python, variant, workloads, args)
                for workload, r in res.get("workloads", {}).items():
                    if "mean_cpu_s" in r:
                        samples.setdefault((sampler, variant, workload), []).append(r["mean_cpu_s"])
        print(f"round {rnd}/{rounds} done", flush=True)
    _with_sampler("all")
    return {key: {"instructions": statistics.median(v)} for key, v in samples.items()}


def render(results: dict, variants: list[str], workloads: list[str], unit: str) -> str:
    scale, fmt = (1.0, "{:>13,.0f}") if unit == "instructions" else (1e6, "{:>13.1f}")
    out = [f"overhead per invocation over noop ({'instructions' if scale == 1 else 'us CPU'}), "
           "everything recorded vs 10% parent-based sampling",
           "",
           f"{'workload':<12} {'variant':<16} {'all recorded':>13} {'10% sampled':>13} {'ratio':>7}",
           "-" * 66]
    for workload in workloads:
        noop = {s: results.get((s, "noop", workload), {}).get("instructions") for s in SAMPLERS}
        for variant in variants:
            if variant == "noop":
                continue
            cells = []
            for sampler in SAMPLERS:
                value = results.get((sampler, variant, workload), {}).get("instructions")
                cells.append(None if value is None or noop[sampler] is None
                             else (value - noop[sampler]) * scale)
            if None in cells:
                err = next((results.get((s, variant, workload), {}).get("error") for s in SAMPLERS), "")
                out.append(f"{workload:<12} {variant:<16} no data {err or ''}"[:120])
                continue
            ratio = cells[1] / cells[0] if cells[0] else float("nan")
            out.append(f"{workload:<12} {variant:<16} {fmt.format(cells[0])} {fmt.format(cells[1])} "
                       f"{ratio:>6.2f}x")
        out.append("")
    out.append("ratio = overhead with 10% sampling / overhead with everything recorded "
               "(otel_callbacks' target: <= 0.35x)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sampling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--timed", action="store_true", help="process CPU time instead of instructions")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--python", default=None)
    args = ap.parse_args(argv)
    python = args.python or default_python()
    variants = ["noop", *[v for v in args.variants.split(",") if v and v != "noop"]]
    workloads = [w for w in args.workloads.split(",") if w]
    if args.timed:
        results = time_all(python, variants, workloads, args.rounds)
        print(render(results, variants, workloads, "seconds"))
    else:
        results = count_all(python, variants, workloads, args.jobs)
        print(render(results, variants, workloads, "instructions"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

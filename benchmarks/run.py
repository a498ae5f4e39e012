"""Benchmark harness entry point.

    python -m benchmarks.run                 # full overhead table (5 rounds)
    python -m benchmarks.run --quick         # 2 short rounds
    python -m benchmarks.run --variants none,noop,otel_callbacks --workloads seq5,nest20
    python -m benchmarks.run --profile nest20 [--profile-variant otel_callbacks]
    python -m benchmarks.run --memory        # bytes held per open run
    python -m benchmarks.run --soak 1000000  # RSS stays flat over many runs
    python -m benchmarks.run --lost          # every started span is exported
    python -m benchmarks.run --instructions  # the same table in CPU instructions (valgrind): no noise

Every measurement runs in its own subprocess, by default with the benchmark
venv's interpreter (.venv-bench, made by scripts/setup-bench-venv.sh) when it
exists.  Rounds are interleaved (round 1: A B C D E, round 2: A B C D E, ...)
and the table reports medians over rounds, with ratios against the ``none``
and ``noop`` variants.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ALL_VARIANTS, EXTRA_VARIANTS
from benchmarks.workloads import DESCRIPTIONS, STREAM_TOKENS, WORKLOADS

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH_RESULT "


def default_python() -> str:
    bench = REPO / ".venv-bench" / "bin" / "python"
    return str(bench) if bench.exists() else sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONWARNINGS", "ignore")
    # Keep anything that would phone home or export elsewhere switched off.
    env.setdefault("LANGCHAIN_TRACING_V2", "false")
    env.setdefault("LANGSMITH_TRACING", "false")
    env.setdefault("TRACELOOP_TELEMETRY", "false")
    env.setdefault("OTEL_SDK_DISABLED", "false")
    return env


def _split(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        sys.exit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


# ---------------------------------------------------------------------------
# Overhead table


def run_worker(python: str, variant: str, workloads: list[str], args) -> dict:
    cmd = [
        python,
        "-m",
        "benchmarks.worker",
        "--variant",
        variant,
        "--workloads",
        ",".join(workloads),
        "--min-time",
        str(args.min_time),
        "--warmup-time",
        str(args.warmup_time),
        "--raw-batches",
        str(args.raw_batches),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"variant": variant, "crashed": f"exit {proc.returncode}", "stderr_tail": tail, "workloads": {}}


def _fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.1f} us"


def _med(xs):
    return statistics.median(xs) if xs else None


def collect(args) -> tuple[dict, dict]:
    python = args.python or default_python()
    variants, workloads = args.variant_list, args.workload_list
    # per[(workload, variant)] -> list of per-round medians; spans likewise
    per: dict = {}
    raw: dict[str, list[float]] = {"wall": [], "cpu": []}
    info: dict = {"skipped": {}, "errors": {}, "crashed": {}, "notes": {}, "versions": None, "python": python}
    order = list(variants)
    print(f"python: {python}", flush=True)
    print(f"rounds: {args.rounds}, variants: {', '.join(variants)}, workloads: {', '.join(workloads)}", flush=True)
    t_start = time.time()
    for rnd in range(1, args.rounds + 1):
        if args.shuffle:
            random.shuffle(order)
        line = [f"round {rnd}/{args.rounds}:"]
        for variant in order:
            if variant in info["skipped"]:
                continue
            res = run_worker(python, variant, workloads, args)
            info["versions"] = info["versions"] or res.get("versions")
            if "skipped" in res:
                info["skipped"][variant] = res["skipped"]
                line.append(f"{variant}(skipped)")
                continue
            if "crashed" in res:
                info["crashed"].setdefault(variant, []).append(res)
                line.append(f"{variant}(CRASHED)")
                continue
            if res.get("note"):
                info["notes"][variant] = res["note"]
            if "token_alone_s" in res:
                info.setdefault("token_alone", {}).setdefault(variant, []).append(res["token_alone_s"])
            if "raw_span_s" in res:
                raw["wall"].append(res["raw_span_s"])
                raw["cpu"].append(res["raw_span_cpu_s"])
            for wl, r in res["workloads"].items():
                if "error" in r:
                    info["errors"][(wl, variant)] = r["error"]
                    continue
                slot = per.setdefault((wl, variant), {"wall": [], "cpu": [], "spans": [], "iters": [],
                                                      "round": []})
                slot["round"].append(rnd)
                slot["wall"].append(r["median_s"])
                slot["cpu"].append(r["median_cpu_s"])
                slot["spans"].append(r["spans"])
                slot["iters"].append(r["iters"])
            line.append(variant)
        print(" ".join(line) + f"  [{time.time() - t_start:.0f}s]", flush=True)
    info["raw"] = raw
    return per, info


def _per_span(per: dict, wl: str, variant: str, clock: str, base_noop: float | None) -> float | None:
    """Seconds per span over the do-nothing handler, or None without the data."""
    slot = per.get((wl, variant))
    spans = _med(slot["spans"]) if slot else None
    if not (slot and spans and base_noop):
        return None
    return (_med(slot[clock]) - base_noop) / spans


def _round_ratios(per: dict, wl: str, clock: str) -> str:
    """The ratio to the floor round by round (each round's three processes ran back to back):
    how far one round's figure moves, which the median over rounds hides."""
    by_round = []
    for variant in ("noop", "sdk_floor", "otel_callbacks"):
        slot = per.get((wl, variant), {})
        by_round.append(dict(zip(slot.get("round", []), slot.get(clock, []))))
    common = set(by_round[0]) & set(by_round[1]) & set(by_round[2])  # rounds all three finished
    ratios = sorted((o - n) / (f - n) for n, f, o in
                    ((by_round[0][r], by_round[1][r], by_round[2][r]) for r in common) if f > n)
    if len(ratios) < 3:
        return ""
    text = f"; per round {ratios[0]:.2f}-{ratios[-1]:.2f}"
    if len(ratios) >= 4:
        low, _, high = statistics.quantiles(ratios, n=4)
        text += f", middle half {low:.2f}-{high:.2f}"
    return text


def render(per: dict, info: dict, args, clock: str) -> str:
    variants, workloads = args.variant_list, args.workload_list
    out = []
    raws = info["raw"][clock]
    raw = _med(raws)
    versions = info.get("versions") or {}
    out.append("")
    out.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    clock_name = "process CPU time (all threads)" if clock == "cpu" else "wall clock (perf_counter)"
    out.append(f"clock: {clock_name}; {args.rounds} interleaved rounds, one process per variant per round")
    if raw:
        spread = (max(raws) - min(raws)) / raw * 100
        out.append(
            f"raw SDK span (start_span w/ parent + 5 attrs + 1 event + end, Simple->InMemory): "
            f"median {raw * 1e6:.2f} us over {len(raws)} processes (spread {spread:.0f}%)"
        )
    out.append("")
    hdr = (
        f"{'workload':<12} {'variant':<22} {'median/iter':>12} {'spread':>7} {'vs none':>8} "
        f"{'vs noop':>8} {'spans':>6} {'per-span over noop':>19}"
    )
    out.append(hdr)
    out.append("-" * len(hdr))
    for wl in workloads:
        base_none = _med(per.get((wl, "none"), {}).get(clock, []))
        base_noop = _med(per.get((wl, "noop"), {}).get(clock, []))
        for variant in variants:
            key = (wl, variant)
            if variant in info["skipped"]:
                out.append(f"{wl:<12} {variant:<22} {'skipped':>12}")
                continue
            if key in info["errors"]:
                out.append(f"{wl:<12} {variant:<22} {'ERROR':>12}  {info['errors'][key][:70]}")
                continue
            slot = per.get(key)
            if not slot:
                out.append(f"{wl:<12} {variant:<22} {'no data':>12}")
                continue
            ts = slot[clock]
            t = _med(ts)
            spans = _med(slot["spans"])
            spread = (max(ts) - min(ts)) / t * 100 if len(ts) > 1 else 0.0
            vs_none = f"{t / base_none:7.2f}x" if base_none else "     n/a"
            vs_noop = f"{t / base_noop:7.2f}x" if base_noop else "     n/a"
            if base_noop and spans and raw and variant not in ("none", "noop"):
                per_span = (t - base_noop) / spans / raw
                per_span_s = f"{per_span:6.2f} raw spans"
            else:
                per_span_s = "-"
            row = (
                f"{wl:<12} {variant:<22} {_fmt_time(t):>12} {spread:6.0f}% {vs_none:>8} {vs_noop:>8} "
                f"{spans:>6g} {per_span_s:>19}"
            )
            if wl == "stream1000" and base_noop and variant not in ("none", "noop"):
                row += f"   per token over noop: {(t - base_noop) / STREAM_TOKENS * 1e6:+.2f} us"
                alone = info.get("token_alone", {})
                if variant in alone and "noop" in alone:
                    row += f" (token alone: {(_med(alone[variant]) - _med(alone['noop'])) * 1e9:+.0f} ns)"
            out.append(row)
        floor = _per_span(per, wl, "sdk_floor", clock, base_noop)
        ours = _per_span(per, wl, "otel_callbacks", clock, base_noop)
        if floor and ours and floor > 0 and wl != "stream1000":  # one span: see per token
            out.append(f"{'':<12} otel_callbacks per span = {ours / floor:.2f} x sdk_floor's "
                       f"({ours * 1e6:.1f} vs {floor * 1e6:.1f} us){_round_ratios(per, wl, clock)}")
            nested = _per_span(per, wl, "sdk_floor_nested", clock, base_noop)
            if nested and nested > 0:
                out.append(f"{'':<12} otel_callbacks per span = {ours / nested:.2f} x "
                           f"sdk_floor_nested's ({nested * 1e6:.1f} us): all but the nesting")
        out.append("")
    out.append("columns: median/iter = median over rounds of each process's median iteration time;")
    out.append("  spread = (max-min)/median of the per-round medians; vs none / vs noop = ratio of medians;")
    out.append("  spans = spans exported per iteration; per-span over noop = ((t - t_noop) / spans) / t_raw_span.")
    out.append("  per token over noop = (t - t_noop) / 1000 on the stream (noisy: about +-0.5 us between processes);")
    out.append("  token alone = one on_llm_new_token through LangChain's run manager, best of 5 x 20,000, minus noop's.")
    out.append("  per round = the same ratio to the floor from each round's own three processes (noop, floor,")
    out.append("  ours ran back to back): one round moves by about +-0.1x on a small VM; trust many rounds.")
    out.append("  sdk_floor = a handler that only makes one raw-span-shaped SDK span per run (parent from a dict):")
    out.append("  the least any one-span-per-run tracer pays inside the workload.")
    if "sdk_floor_nested" in variants:
        out.append("  sdk_floor_nested = the floor, each run's span also made current where the run executes")
        out.append("  (otel_callbacks' context bridge): the floor of a tracer whose spans nest user code.")
    for variant, reason in info["skipped"].items():
        out.append(f"skipped {variant}: {reason}")
    for variant, note in info["notes"].items():
        out.append(f"note {variant}: {note}")
    for variant, crashes in info["crashed"].items():
        out.append(f"CRASHED {variant} ({len(crashes)}x): {crashes[0]['crashed']}")
        out.extend("    " + ln for ln in crashes[0]["stderr_tail"])
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The other modes each run in one subprocess of the bench interpreter.


def run_module(python: str, module: str, extra: list[str], timeout: float | None) -> int:
    cmd = [python, "-m", module, *extra]
    return subprocess.run(cmd, cwd=REPO, env=_env(), timeout=timeout).returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, --quick 2)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, shorter timing windows")
    ap.add_argument(
        "--variants",
        default=",".join(ALL_VARIANTS),
        help=f"comma list from {', '.join(ALL_VARIANTS + EXTRA_VARIANTS)}",
    )
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list from {', '.join(WORKLOADS)}")
    ap.add_argument("--min-time", type=float, default=None, help="timed seconds per workload per process")
    ap.add_argument("--warmup-time", type=float, default=None)
    ap.add_argument("--raw-batches", type=int, default=None)
    ap.add_argument(
        "--clock",
        choices=("cpu", "wall", "both"),
        default="cpu",
        help="cpu: process CPU time per iteration (robust to a busy machine, default); wall: perf_counter; "
        "both: one table each",
    )
    ap.add_argument("--shuffle", action="store_true", help="shuffle variant order within each round")
    ap.add_argument("--python", default=None, help="interpreter for the subprocesses (default: .venv-bench if present)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
    ap.add_argument("--json", metavar="PATH", help="also write raw per-round results here")
    ap.add_argument("--list", action="store_true", help="list workloads and variants")
    ap.add_argument("--profile", metavar="WORKLOAD", help="cProfile one workload and print top functions")
    ap.add_argument("--profile-variant", default="otel_callbacks")
    ap.add_argument("--profile-iters", type=int, default=200)
    ap.add_argument("--memory", action="store_true", help="tracemalloc bytes held per open run")
    ap.add_argument("--memory-runs", type=int, default=10_000)
    ap.add_argument(
        "--soak", type=int, nargs="?", const=1_000_000, default=None, metavar="N", help="soak N runs (default 1e6)"
    )
    ap.add_argument("--lost", action="store_true", help="nothing-lost check (flush and interpreter exit)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per span / per token under valgrind (--variants, --workloads)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel valgrind processes for --instructions")
    ap.add_argument("--lost-runs", type=int, default=10_000)
    ap.add_argument(
        "--mode-variants",
        default="otel_callbacks",
        help="variants for --memory/--soak/--lost (memory also accepts the peers)",
    )
    args = ap.parse_args(argv)

    if args.list:
        for name, desc in DESCRIPTIONS.items():
            print(f"{name:<12} {desc}")
        print("variants:", ", ".join(ALL_VARIANTS), "| extra:", ", ".join(EXTRA_VARIANTS))
        return 0

    python = args.python or default_python()
    if args.profile or args.memory or args.soak is not None or args.lost:
        rc = 0
        if args.profile:
            _split(args.profile, list(WORKLOADS), "workload")
            rc |= run_module(
                python,
                "benchmarks.worker",
                [
                    "--profile",
                    "--variant",
                    args.profile_variant,
                    "--workloads",
                    args.profile,
                    "--profile-iters",
                    str(args.profile_iters),
                ],
                args.timeout,
            )
        mode_variants = _split(args.mode_variants, ALL_VARIANTS + EXTRA_VARIANTS, "variant")
        if args.memory:
            for v in mode_variants:
                rc |= run_module(
                    python, "benchmarks.memory", ["open-runs", "--variant", v, "--runs", str(args.memory_runs)], None
                )
        if args.soak is not None:
            for v in mode_variants:
                rc |= run_module(python, "benchmarks.memory", ["soak", "--variant", v, "--runs", str(args.soak)], None)
        if args.lost:
            for v in mode_variants:
                rc |= run_module(python, "benchmarks.lost", ["--variant", v, "--runs", str(args.lost_runs)], None)
        return rc

    args.variant_list = _split(args.variants, ALL_VARIANTS + EXTRA_VARIANTS, "variant")
    args.workload_list = _split(args.workloads, list(WORKLOADS), "workload")
    if args.instructions:
        from benchmarks.instructions import run as count_instructions

        return count_instructions(python, args.variant_list, args.workload_list, args.jobs)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.min_time is None:
        args.min_time = 0.25 if args.quick else 0.8
    if args.warmup_time is None:
        args.warmup_time = 0.08 if args.quick else 0.2
    if args.raw_batches is None:
        args.raw_batches = 10 if args.quick else 30

    per, info = collect(args)
    for clock in ("cpu", "wall") if args.clock == "both" else (args.clock,):
        print(render(per, info, args, clock))
    if args.json:
        dump = {
            "results": {f"{wl}|{v}": slot for (wl, v), slot in per.items()},
            "raw_span_s": info["raw"],
            "skipped": info["skipped"],
            "errors": {f"{wl}|{v}": e for (wl, v), e in info["errors"].items()},
            "versions": info["versions"],
        }
        Path(args.json).write_text(json.dumps(dump, indent=2))
    return 1 if info["crashed"] else 0


if __name__ == "__main__":
    sys.exit(main())

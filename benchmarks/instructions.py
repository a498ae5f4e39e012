"""Per-span and per-token cost in CPU instructions, counted by valgrind (callgrind): no noise.

Timing on these machines moves by 10-30% between runs, which hides a per-token difference of a
few hundred nanoseconds. Instruction counts are exact and repeatable (PYTHONHASHSEED fixed), so
this mode answers "how much work does each variant add" without noise. It does not see cache
and branch effects: the SDK's code runs about 1.6x slower between LangChain's steps than in a
tight loop, which the timing table (``benchmarks.run``) includes and this one does not. Read
both.

Each (variant, workload) runs in its own process under
``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce``: imports,
setup and warm-up are not counted; only the measured iterations, which run inside one
``functools.reduce`` call, are, with the garbage collector off in that region (where a
collection lands depends on every allocation before it, which would add noise of about a
million instructions). So the counts leave out the collector's own work.

    python -m benchmarks.run --instructions [--variants ...] [--workloads ...]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "INSTR_RESULT "
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
RAW = "raw_span"  # the yardstick, counted like a workload
# Per token, the whole stream cannot resolve a few hundred instructions: LangChain allocates a
# chunk, a message and metadata per token, and how much the allocator does for them depends on
# the heap each variant left behind (even a handler that does nothing per token moves the count by
# about 1,500 per token). So the token is counted alone: LangChain's real run manager dispatching
# ``on_llm_new_token`` for one open chat-model run, the same token and chunk every time.
TOKEN_DISPATCH = "token_dispatch"
# Steady state: CPython specialises a function's bytecode only after it has run a few times,
# and caches fill on first use, so the first iterations cost more (prompt_chat: 2-4% more per
# span with 3 warm-up and 5 counted iterations than with 20 and 40). A long-running app runs
# warm: warm up, then count enough iterations that the rest does not matter.
# Run ids are time-based (uuid7), so dict probing differs run to run: a few thousand
# instructions per iteration either way, averaged out over several hundred runs per count.
WARMUP = 20
ITERATIONS = {RAW: 200, "seq5": 100, "prompt_chat": 200, "nest20": 20, "abatch20": 10,
              "graph_loop": 40, "stream1000": 4, TOKEN_DISPATCH: 20_000}


def _worker(variant: str, workload: str, iterations: int) -> None:
    """Runs inside valgrind: set up, warm up, then the counted iterations in one reduce()."""
    from benchmarks.common import make_provider, prepare_workload, raw_span_once, setup_variant
    from benchmarks.workloads import WORKLOADS
    from opentelemetry import trace

    tp, exporter = make_provider()
    if workload == RAW:
        tracer = tp.get_tracer("benchmarks.raw")
        parent_ctx = trace.set_span_in_context(tracer.start_span("raw-parent"))

        def fn() -> None:
            raw_span_once(tracer, parent_ctx)
    elif workload == TOKEN_DISPATCH:
        fn = _token_dispatch(setup_variant(variant, tp).config)
    else:
        chosen = setup_variant(variant, tp)
        prepare_workload(chosen, workload)
        fn = WORKLOADS[workload](chosen.config)
    for _ in range(WARMUP):
        fn()
    exporter.clear()
    # No collections inside the counted region: where one lands depends on every allocation
    # before it, so it would move counts by about a million instructions between variants
    # (as much as 1,000 per token) and swamp the difference being measured.
    gc.collect()
    gc.disable()
    functools.reduce(lambda acc, _: fn(), range(iterations), None)
    gc.enable()
    spans = len(exporter.get_finished_spans()) / iterations
    sys.stdout.write(RESULT_PREFIX + json.dumps({"spans": spans}) + "\n")


def _token_dispatch(config: dict[str, Any]) -> Any:
    """One streamed token through LangChain's own dispatch to the variant's handlers."""
    from langchain_core.callbacks import CallbackManager
    from langchain_core.messages import AIMessageChunk, HumanMessage
    from langchain_core.outputs import ChatGenerationChunk

    # configure() is where the peers' instrumentors add their handler, as in a real run.
    manager = CallbackManager.configure(inheritable_callbacks=config.get("callbacks"))
    run = manager.on_chat_model_start({"name": "bench-token-stream"}, [[HumanMessage("hi")]])[0]
    chunk = ChatGenerationChunk(message=AIMessageChunk(content="t"))
    for _ in range(10):  # past the bounded token events: the steady state of a long stream
        run.on_llm_new_token("t", chunk=chunk)

    def fn() -> None:
        run.on_llm_new_token("t", chunk=chunk)

    return fn


def count(python: str, variant: str, workload: str, iterations: int,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Instructions per iteration and spans per iteration for one (variant, workload)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no",
           "--toggle-collect=functools_reduce", python, "-m", "benchmarks.instructions",
           "--worker", variant, workload, str(iterations)]
    env = {**(os.environ if env is None else env), "PYTHONHASHSEED": "0", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    collected = _COLLECTED.search(proc.stderr)
    result = next((json.loads(line[len(RESULT_PREFIX):]) for line in proc.stdout.splitlines()
                   if line.startswith(RESULT_PREFIX)), None)
    if proc.returncode != 0 or collected is None or result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return {"instructions": int(collected.group(1)) / iterations, "spans": result["spans"]}


def run(python: str, variants: list[str], workloads: list[str], jobs: int) -> int:

    if shutil.which("valgrind") is None:
        print("valgrind not found: install it (apt-get install valgrind) to count instructions")
        return 2
    variants = ["noop", *[v for v in variants if v not in ("none", "noop")]]
    counted = [*workloads, *([TOKEN_DISPATCH] if "stream1000" in workloads else [])]
    jobs_list = [(RAW, RAW)] + [(v, w) for w in counted for v in variants]
    print(f"counting instructions: {len(jobs_list)} processes under callgrind, {jobs} at a time "
          f"(about 30-60 s each)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {key: pool.submit(count, python, key[0], key[1], ITERATIONS.get(key[1], 5))
                   for key in jobs_list}
        results = {key: future.result() for key, future in futures.items()}
    raw = results[(RAW, RAW)].get("instructions")
    if not raw:
        print(f"raw span could not be counted: {results[(RAW, RAW)]}")
        return 1
    print(f"\nraw SDK span (start_span w/ parent + 5 attrs + 1 event + end): {raw:,.0f} instructions")
    print(f"\n{'workload':<12} {'variant':<16} {'instr/iter':>13} {'spans':>6} "
          f"{'per span over noop':>19}  {'raw spans':>9}")
    failed = 0
    for workload in workloads:
        noop = results[("noop", workload)].get("instructions")
        for variant in variants:
            res = results[(variant, workload)]
            if "error" in res:
                failed += 1
                print(f"{workload:<12} {variant:<16} ERROR {res['error'][:90]}")
                continue
            line = f"{workload:<12} {variant:<16} {res['instructions']:>13,.0f} {res['spans']:>6g}"
            if variant != "noop" and noop and res["spans"]:
                over = (res["instructions"] - noop) / res["spans"]
                line += f" {over:>19,.0f}  {over / raw:>9.2f}"
                if workload == "stream1000" and (variant, TOKEN_DISPATCH) in results:
                    token = results[(variant, TOKEN_DISPATCH)].get("instructions")
                    noop_token = results[("noop", TOKEN_DISPATCH)].get("instructions")
                    if token is not None and noop_token is not None:
                        line += f"   per token over noop: {token - noop_token:,.0f}"
            print(line)
        print()
    print("per span over noop = (instructions per iteration - noop's) / spans per iteration;")
    print("per token over noop = one on_llm_new_token through LangChain's run manager, minus noop's")
    print("  (counted alone, see TOKEN_DISPATCH; the stream's per-span column holds the whole stream).")
    print("raw spans = that / the raw span's instructions. Instructions, not time: see the docstring.")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=3, metavar=("VARIANT", "WORKLOAD", "N"))
    args = ap.parse_args(argv)
    if args.worker:
        variant, workload, n = args.worker
        _worker(variant, workload, int(n))
        return 0
    ap.error("run it through: python -m benchmarks.run --instructions")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Per-token cost alone, timed: one ``on_llm_new_token`` through LangChain's run manager.

The 1,000-token stream in ``benchmarks.run`` moves by about 1 us per token between runs on these
machines, more than the cost being measured. This times the token path alone, in one process,
interleaving the variants and keeping the best of several repeats (the least disturbed): LangChain's
real ``CallbackManagerForLLMRun.on_llm_new_token`` for one open chat-model run, past the bounded
token events, plus the context bridge's per-chunk step for ``otel_callbacks``. It runs in a tight
loop, so read it as a lower bound; ``benchmarks.run --instructions`` counts the same path.

    python -m benchmarks.token_dispatch [--variants noop,otel_callbacks,openllmetry,openinference]
"""

from __future__ import annotations

import argparse
import timeit

from benchmarks.common import VariantUnavailable, make_provider, setup_variant
from benchmarks.instructions import _token_dispatch

TOKENS = 100_000


def token_seconds(config: dict, repeats: int = 5, tokens: int = 20_000) -> float:
    """Best time of one token through LangChain's run manager to ``config``'s handlers."""
    call = _token_dispatch(config)
    return min(timeit.repeat(call, number=tokens, repeat=repeats)) / tokens


def _bridge_step_ns(repeats: int) -> float:
    """What the context bridge adds per chunk of a sync model stream (its per-step loop)."""
    from otel_callbacks.context_bridge import _MODEL_RUNS, _Scope, _scoped_iter

    def plain() -> None:
        for _ in iter(range(TOKENS)):
            pass

    def bridged() -> None:
        for _ in _scoped_iter(iter(range(TOKENS)), _Scope(_MODEL_RUNS)):
            pass

    best = {f: min(timeit.repeat(f, number=1, repeat=repeats)) for f in (plain, bridged)}
    return (best[bridged] - best[plain]) / TOKENS * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="noop,otel_callbacks,openllmetry,openinference")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    tp, _exporter = make_provider()
    calls = {}
    for name in args.variants.split(","):
        try:
            calls[name] = _token_dispatch(setup_variant(name, tp).config)
        except VariantUnavailable as exc:
            print(f"{name}: skipped ({exc})")
    best = {name: float("inf") for name in calls}
    for _ in range(args.repeats):  # interleaved: noise hits every variant alike
        for name, call in calls.items():
            best[name] = min(best[name], timeit.timeit(call, number=TOKENS) / TOKENS * 1e9)
    noop = best.get("noop")
    print(f"one token through LangChain's run manager, best of {args.repeats} x {TOKENS:,} tokens")
    for name, ns in best.items():
        over = f"{ns - noop:+8.0f} ns over noop" if noop is not None and name != "noop" else ""
        print(f"  {name:<16} {ns:8.0f} ns per token  {over}")
    if "otel_callbacks" in best:
        step = _bridge_step_ns(args.repeats)
        print(f"  context bridge, per chunk of a sync stream: {step:+.0f} ns")
        if noop is not None:
            total = best["otel_callbacks"] - noop + step
            print(f"  otel_callbacks per token over noop, handler + bridge: {total:+.0f} ns "
                  f"(target < 500 ns)")


if __name__ == "__main__":
    main()

"""Does the sampler decide a child by its parent? Then an unsampled trace needs no span work.

With parent-based sampling (``parentbased_traceidratio``, the usual production setting) every
descendant of an unsampled run is dropped by the SDK, so building its name, attributes and
content would be work nobody sees. The handler asks this module once per provider, through
the sampler's public API: a probe with an unsampled local parent and a trace id any ratio
sampler would keep. Only a sampler that drops it (``ParentBased`` with its default for
unsampled local parents, or ``ALWAYS_OFF``) lets the handler skip the children; any other
sampler (a custom one, ``ParentBased(local_parent_not_sampled=ALWAYS_ON)``) gets every span
built as before.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

_PROBE_TRACE_IDS = (1, 0x7FFF_FFFF_FFFF_FFFF, (1 << 128) - 1)  # kept by any ratio sampler: the first


def children_follow_unsampled_parent(provider: Any) -> bool:
    """True when ``provider``'s sampler drops every child of an unsampled local parent."""
    sampler = getattr(provider, "sampler", None)
    should_sample = getattr(sampler, "should_sample", None)
    if should_sample is None:
        return False
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id=_PROBE_TRACE_IDS[0], span_id=1, is_remote=False, trace_flags=TraceFlags(0))))
    try:
        for trace_id in _PROBE_TRACE_IDS:
            result = should_sample(parent, trace_id, "otel_callbacks.sampling_probe",
                                   SpanKind.INTERNAL, {})
            if result.decision.is_recording():
                return False
    except Exception:  # a sampler that cannot answer a probe: build every span
        return False
    return True

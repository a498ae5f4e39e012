"""What the instrumentor needs installed: read by ``opentelemetry-instrument``'s dependency check."""

from __future__ import annotations

_instruments = ("langchain-core >= 0.3.52",)

_supports_metrics = True

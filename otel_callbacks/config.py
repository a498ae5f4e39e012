"""Tracing set up from the standard OpenTelemetry environment, with a no-services default.

``configure_tracing()`` builds an SDK ``TracerProvider`` the way a user of any OpenTelemetry
SDK expects: resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``, sampler from
``OTEL_TRACES_SAMPLER``/``_ARG``, exporters from ``OTEL_TRACES_EXPORTER`` and the
``OTEL_EXPORTER_OTLP_*`` variables, batching from ``OTEL_BSP_*``. When nothing names a
destination, spans go to a local OTLP/JSON lines file (``$OTEL_CALLBACKS_FILE``, default
``./otel-traces.jsonl``), so a first run needs no collector. Spans are flushed at exit.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from .batching import BatchSettings, DropReportingBatchSpanProcessor
from .cli.file_exporter import FILE_ENV, OTLPJsonFileSpanExporter, default_path

logger = logging.getLogger("otel_callbacks")

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
FILE_EXPORTER_NAME = "otlp_json_file"
_TRACES_PATH = "/v1/traces"
_DEFAULT_ENDPOINTS = {GRPC: "http://localhost:4317", HTTP_PROTOBUF: "http://localhost:4318"}

__all__ = ["Destination", "FILE_ENV", "configure_tracing", "env_endpoint", "file_destination",
           "otlp_destination", "resolve_destinations"]


@dataclass(frozen=True)
class Destination:
    """Where one exporter sends spans, in words a user can act on."""

    kind: str  # "otlp grpc", "otlp http/protobuf", "file", "console"
    target: str  # endpoint URL, file path or "stdout"
    exporter: SpanExporter

    def __str__(self) -> str:
        return f"{self.target} ({self.kind})"


def configure_tracing(*, default_service_name: str | None = None, endpoint: str | None = None,
                      protocol: str | None = None, file: str | os.PathLike[str] | None = None,
                      console: bool = False, timeout: float | None = None,
                      set_global: bool = True, max_queue_size: int | None = None,
                      max_export_batch_size: int | None = None,
                      schedule_delay_millis: float | None = None) -> TracerProvider:
    """Build (and by default install globally) a ``TracerProvider`` from the environment.

    Explicit ``endpoint``/``file``/``console`` replace the environment's choice of exporters;
    ``protocol`` is ``grpc`` or ``http/protobuf`` (``http`` for short). ``timeout`` bounds each
    OTLP export in seconds. The provider shuts down (flushing its spans) at interpreter exit.
    Batching fits LLM bursts (see ``batching.py``); each setting is the argument, else its
    ``OTEL_BSP_*`` variable, else our default, and dropped spans are counted and warned about.
    """
    provider = TracerProvider(resource=build_resource(default_service_name), shutdown_on_exit=True)
    destinations = resolve_destinations(endpoint=endpoint, protocol=protocol, file=file,
                                        console=console, timeout=timeout)
    batch = BatchSettings.resolve(max_queue_size=max_queue_size,
                                  max_export_batch_size=max_export_batch_size,
                                  schedule_delay_millis=schedule_delay_millis)
    for destination in destinations:
        provider.add_span_processor(DropReportingBatchSpanProcessor(destination.exporter, batch))
    logger.info("otel-callbacks: spans go to %s",
                ", ".join(map(str, destinations)) or "nowhere (OTEL_TRACES_EXPORTER=none)")
    if set_global:
        current = trace.get_tracer_provider()
        if isinstance(current, trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        else:
            logger.warning("otel-callbacks: a global TracerProvider is already set; "
                           "the new one is returned but not installed")
    return provider


def build_resource(default_service_name: str | None = None) -> Resource:
    """The environment's resource; ``default_service_name`` only when it names no service."""
    resource = Resource.create()
    name = resource.attributes.get(SERVICE_NAME)
    if default_service_name and (not name or str(name).startswith("unknown_service")):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


def resolve_destinations(*, endpoint: str | None = None, protocol: str | None = None,
                         file: str | os.PathLike[str] | None = None, console: bool = False,
                         timeout: float | None = None) -> list[Destination]:
    """The exporters ``configure_tracing`` uses: the arguments', else the environment's."""
    if endpoint or file or console:
        chosen = []
        if endpoint:
            chosen.append(otlp_destination(endpoint, protocol, timeout))
        if file:
            chosen.append(file_destination(file))
        if console:
            chosen.append(Destination("console", "stdout", ConsoleSpanExporter()))
        return chosen
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()]
    if not names:
        names = ["otlp"] if env_endpoint() else [FILE_EXPORTER_NAME]
    return [d for d in (_named_destination(n, protocol, timeout) for n in names) if d is not None]


def _named_destination(name: str, protocol: str | None, timeout: float | None) -> Destination | None:
    if name == "none":
        return None
    if name == "otlp":
        return otlp_destination(None, protocol, timeout)
    if name in ("otlp_proto_grpc", "otlp_proto_http"):
        return otlp_destination(None, GRPC if name.endswith("grpc") else HTTP_PROTOBUF, timeout)
    if name == "console":
        return Destination("console", "stdout", ConsoleSpanExporter())
    if name == FILE_EXPORTER_NAME:
        return file_destination(None)
    raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (expected otlp, "
                     f"otlp_proto_grpc, otlp_proto_http, console, {FILE_EXPORTER_NAME} or none)")


def file_destination(path: str | os.PathLike[str] | None) -> Destination:
    """An OTLP/JSON lines file; ``None`` means ``$OTEL_CALLBACKS_FILE`` or the default file."""
    exporter = OTLPJsonFileSpanExporter(path if path is not None else default_path())
    return Destination("file", str(exporter.path), exporter)


def env_endpoint() -> str | None:
    """The traces endpoint the environment names, if any."""
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)


def otlp_destination(endpoint: str | None, protocol: str | None = None,
                     timeout: float | None = None) -> Destination:
    """An OTLP exporter for ``endpoint`` (a collector base URL), else the environment's.

    The protocol is ``protocol``, else ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` /
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, else guessed from the port (4317 is gRPC), else
    http/protobuf. Headers, TLS and compression come from the environment, as usual.
    """
    traces_env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    signal_specific = not endpoint and bool(traces_env)
    base = _with_scheme(endpoint or traces_env or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    chosen = _protocol(protocol or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                       or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                       or (GRPC if urlparse(base).port == 4317 else HTTP_PROTOBUF))
    base = base or _DEFAULT_ENDPOINTS[chosen]
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if chosen == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Destination(f"otlp {GRPC}", base, Grpc(endpoint=base, **kwargs))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    # A signal-specific endpoint is used as is; a base URL gets the traces path appended.
    url = base if signal_specific else _traces_url(base)
    return Destination(f"otlp {HTTP_PROTOBUF}", url, Http(endpoint=url, **kwargs))


def _protocol(value: str) -> str:
    normalized = value.strip().lower()
    if normalized == GRPC:
        return GRPC
    if normalized in ("http", HTTP_PROTOBUF):
        return HTTP_PROTOBUF
    raise ValueError(f"unsupported OTLP protocol {value!r}: use grpc or http/protobuf")


def _with_scheme(url: str) -> str:
    url = url.strip()
    return url if not url or "://" in url else f"http://{url}"


def _traces_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH

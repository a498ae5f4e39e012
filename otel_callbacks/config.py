"""Tracing set up from the standard OpenTelemetry environment, with a no-services default.

``configure_tracing()`` builds an SDK ``TracerProvider`` the way a user of any OpenTelemetry
SDK expects: resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``, sampler from
``OTEL_TRACES_SAMPLER``/``_ARG``, exporters from ``OTEL_TRACES_EXPORTER`` and the
``OTEL_EXPORTER_OTLP_*`` variables, batching from ``OTEL_BSP_*``. When nothing names a
destination, spans go to a local OTLP/JSON lines file (``$OTEL_CALLBACKS_FILE``, default
``./otel-traces.jsonl``), so a first run needs no collector. Spans are flushed at exit.

``configure_metrics()`` does the same for a ``MeterProvider`` (``OTEL_METRICS_EXPORTER``, the
``OTEL_EXPORTER_OTLP_*`` variables, ``OTEL_METRIC_EXPORT_INTERVAL``); ``configure()`` sets up
both with one call.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Generic, NamedTuple, TypeVar
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from .batching import BatchSettings, DropReportingBatchSpanProcessor
from .exporters.file_exporter import FILE_ENV, OTLPJsonFileSpanExporter, default_path
from .metrics import is_configured

logger = logging.getLogger("otel_callbacks")

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
FILE_EXPORTER_NAME = "otlp_json_file"
_TRACES_PATH = "/v1/traces"
_METRICS_PATH = "/v1/metrics"
_DEFAULT_ENDPOINTS = {GRPC: "http://localhost:4317", HTTP_PROTOBUF: "http://localhost:4318"}

__all__ = ["Destination", "FILE_ENV", "Providers", "configure", "configure_metrics",
           "configure_tracing", "env_endpoint", "file_destination", "otlp_destination",
           "otlp_metrics_destination", "resolve_destinations", "resolve_metrics_destinations"]

ExporterT = TypeVar("ExporterT", covariant=True)


@dataclass(frozen=True)
class Destination(Generic[ExporterT]):
    """Where one exporter sends spans (or metrics), in words a user can act on."""

    kind: str  # "otlp grpc", "otlp http/protobuf", "file", "console", or an entry point's name
    target: str  # endpoint URL, file path or "stdout"
    exporter: ExporterT  # a SpanExporter; for metrics a MetricExporter, or a pull MetricReader

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
                         timeout: float | None = None) -> list[Destination[SpanExporter]]:
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
    names = _exporter_names("OTEL_TRACES_EXPORTER")
    if not names:
        names = ["otlp"] if env_endpoint() else [FILE_EXPORTER_NAME]
    return [d for d in (_named_destination(n, protocol, timeout) for n in names) if d is not None]


def _exporter_names(variable: str) -> list[str]:
    """The exporter names a comma-separated ``OTEL_*_EXPORTER`` variable lists, lower-cased."""
    return [n.strip().lower() for n in os.environ.get(variable, "").split(",") if n.strip()]


def _named_destination(name: str, protocol: str | None,
                       timeout: float | None) -> Destination[SpanExporter] | None:
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


def file_destination(path: str | os.PathLike[str] | None) -> Destination[SpanExporter]:
    """An OTLP/JSON lines file; ``None`` means ``$OTEL_CALLBACKS_FILE`` or the default file."""
    exporter = OTLPJsonFileSpanExporter(path if path is not None else default_path())
    return Destination("file", str(exporter.path), exporter)


def env_endpoint() -> str | None:
    """The traces endpoint the environment names, if any."""
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)


def otlp_destination(endpoint: str | None, protocol: str | None = None,
                     timeout: float | None = None) -> Destination[SpanExporter]:
    """An OTLP exporter for ``endpoint`` (a collector base URL), else the environment's.

    The protocol is ``protocol``, else ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` /
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, else guessed from the port (4317 is gRPC), else
    http/protobuf. Headers, TLS and compression come from the environment, as usual.
    """
    chosen, url = _otlp_target("TRACES", _TRACES_PATH, endpoint, protocol)
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if chosen == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Destination(f"otlp {GRPC}", url, Grpc(endpoint=url, **kwargs))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Destination(f"otlp {HTTP_PROTOBUF}", url, Http(endpoint=url, **kwargs))


def _otlp_target(signal: str, path: str, endpoint: str | None,
                 protocol: str | None) -> tuple[str, str]:
    """(protocol, URL) of one signal's OTLP exporter, by the rules of ``otlp_destination``."""
    signal_env = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    signal_specific = not endpoint and bool(signal_env)
    base = _with_scheme(endpoint or signal_env or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    chosen = _protocol(protocol or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
                       or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                       or (GRPC if urlparse(base).port == 4317 else HTTP_PROTOBUF))
    base = base or _DEFAULT_ENDPOINTS[chosen]
    if chosen == GRPC or signal_specific:
        return chosen, base  # gRPC needs no path; a signal-specific endpoint is used as is
    return chosen, _signal_url(base, path)


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


def _signal_url(base: str, path: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(path) else base + path


# --- metrics --------------------------------------------------------------------------------
class Providers(NamedTuple):
    """What ``configure()`` built."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider


def configure(*, default_service_name: str | None = None, endpoint: str | None = None,
              protocol: str | None = None, file: str | os.PathLike[str] | None = None,
              console: bool = False, timeout: float | None = None,
              set_global: bool = True) -> Providers:
    """``configure_tracing()`` and ``configure_metrics()`` in one call, on one resource.

    ``endpoint``, ``protocol``, ``console`` and ``timeout`` apply to both signals; ``file``
    (OTLP/JSON lines) to spans only.
    """
    common: dict[str, Any] = dict(default_service_name=default_service_name, endpoint=endpoint,
                                  protocol=protocol, console=console, timeout=timeout,
                                  set_global=set_global)
    return Providers(configure_tracing(file=file, **common), configure_metrics(**common))


def configure_metrics(*, default_service_name: str | None = None, endpoint: str | None = None,
                      protocol: str | None = None, console: bool = False,
                      timeout: float | None = None, export_interval: float | None = None,
                      set_global: bool = True) -> MeterProvider:
    """Build (and by default install globally) a ``MeterProvider`` from the environment.

    Exporters come from ``OTEL_METRICS_EXPORTER`` (``otlp``, ``otlp_proto_grpc``,
    ``otlp_proto_http``, ``console``, ``none``, or any ``opentelemetry_metrics_exporter`` entry
    point such as ``prometheus``); the default is ``otlp`` when an OTLP endpoint is set, else
    none (the local file holds spans only). Explicit ``endpoint``/``console`` replace the
    environment's choice. Push exporters run every ``export_interval`` seconds (default
    ``OTEL_METRIC_EXPORT_INTERVAL``, 60 s). The provider flushes at interpreter exit.
    """
    readers: list[MetricReader] = []
    interval = None if export_interval is None else export_interval * 1000
    destinations = resolve_metrics_destinations(endpoint=endpoint, protocol=protocol,
                                                console=console, timeout=timeout)
    for destination in destinations:
        exporter = destination.exporter
        readers.append(exporter if isinstance(exporter, MetricReader)
                       else PeriodicExportingMetricReader(exporter, export_interval_millis=interval))
    provider = MeterProvider(metric_readers=readers, resource=build_resource(default_service_name),
                             shutdown_on_exit=True)
    logger.info("otel-callbacks: metrics go to %s",
                ", ".join(map(str, destinations)) or "nowhere (no endpoint, or OTEL_METRICS_EXPORTER=none)")
    if set_global:
        if not is_configured(metrics.get_meter_provider()):
            metrics.set_meter_provider(provider)
        else:
            logger.warning("otel-callbacks: a global MeterProvider is already set; "
                           "the new one is returned but not installed")
    return provider


def resolve_metrics_destinations(
        *, endpoint: str | None = None, protocol: str | None = None, console: bool = False,
        timeout: float | None = None) -> list[Destination[MetricExporter | MetricReader]]:
    """The exporters ``configure_metrics`` uses: the arguments', else the environment's."""
    chosen: list[Destination[MetricExporter | MetricReader]] = []
    if endpoint or console:
        if endpoint:
            chosen.append(otlp_metrics_destination(endpoint, protocol, timeout))
        if console:
            chosen.append(Destination("console", "stdout", ConsoleMetricExporter()))
        return chosen
    names = _exporter_names("OTEL_METRICS_EXPORTER")
    if not names:
        names = ["otlp"] if env_metrics_endpoint() else []
    for name in names:
        if name == "none":
            continue
        if name in ("otlp", "otlp_proto_grpc", "otlp_proto_http"):
            named = {"otlp_proto_grpc": GRPC, "otlp_proto_http": HTTP_PROTOBUF}.get(name, protocol)
            chosen.append(otlp_metrics_destination(None, named, timeout))
        elif name == "console":
            chosen.append(Destination("console", "stdout", ConsoleMetricExporter()))
        else:
            chosen.append(_entry_point_metrics_destination(name))
    return chosen


def env_metrics_endpoint() -> str | None:
    """The metrics endpoint the environment names, if any."""
    return (os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)


def otlp_metrics_destination(endpoint: str | None, protocol: str | None = None,
                             timeout: float | None = None) -> Destination[MetricExporter]:
    """An OTLP metric exporter, chosen by the rules of ``otlp_destination`` (``METRICS`` in the
    signal-specific variable names, ``/v1/metrics`` as the HTTP path)."""
    chosen, url = _otlp_target("METRICS", _METRICS_PATH, endpoint, protocol)
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    exporter: MetricExporter
    if chosen == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        exporter = Grpc(endpoint=url, **kwargs)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

        exporter = Http(endpoint=url, **kwargs)
    return Destination(f"otlp {chosen}", url, exporter)


def _entry_point_metrics_destination(name: str) -> Destination[MetricExporter | MetricReader]:
    from opentelemetry.util._importlib_metadata import entry_points

    found = list(entry_points(group="opentelemetry_metrics_exporter", name=name))
    if not found:
        raise ValueError(f"OTEL_METRICS_EXPORTER: unknown exporter {name!r} (expected otlp, "
                         "otlp_proto_grpc, otlp_proto_http, console, none, or an installed "
                         "opentelemetry_metrics_exporter entry point such as prometheus)")
    component = found[0].load()()  # a push exporter, or a reader (e.g. Prometheus' pull endpoint)
    return Destination(name, type(component).__name__, component)

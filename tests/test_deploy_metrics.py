"""Static checks of the metrics path in the local stack (issue 14): collector metrics pipeline,
Prometheus, Tempo's metrics-generator, Grafana's Prometheus data source and dashboards.

Like test_deploy_config.py, no container runtime is needed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _load(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose():
    return _load(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def collector():
    return _load(ROOT / "collector-config.yaml")


@pytest.fixture(scope="module")
def tempo_cfg():
    return _load(DEPLOY / "tempo" / "tempo.yaml")


@pytest.fixture(scope="module")
def datasources():
    data = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    return {ds["uid"]: ds for ds in data["datasources"]}


def _mounts(service: dict) -> dict[str, str]:
    """host path or volume -> container path."""
    return {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", [])}


def _flags(service: dict) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for arg in service["command"]:
        key, sep, value = arg.partition("=")
        out[key] = value if sep else None
    return out


def _published(service: dict) -> set[int]:
    return {int(spec.split(":")[-1].split("/")[0]) for spec in service.get("ports", [])}


def test_collector_metrics_pipeline(collector):
    metrics = collector["service"]["pipelines"]["metrics"]
    assert metrics["receivers"] == ["otlp"]
    assert metrics["processors"][0] == "memory_limiter"
    assert "batch" in metrics["processors"]
    assert metrics["exporters"] == ["prometheus"]
    for kind in ("receivers", "processors", "exporters"):
        for name in metrics[kind]:
            assert name in collector[kind], f"{kind[:-1]} {name!r} not defined"


def test_collector_prometheus_exporter_is_what_prometheus_scrapes(collector, compose):
    exporter = collector["exporters"]["prometheus"]
    host, port = exporter["endpoint"].rsplit(":", 1)
    assert host == "0.0.0.0"  # reachable from the prometheus container
    assert exporter["enable_open_metrics"] is True  # exemplars need OpenMetrics
    # service_name on every series: the dashboard's service variable.
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is True

    prom = compose["services"]["prometheus"]
    config_path = _flags(prom)["--config.file"]
    host_file = {c: h for h, c in _mounts(prom).items()}[config_path]
    scrape = _load(ROOT / host_file)
    targets = [t for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert f"otel-collector:{port}" in targets
    assert "otel-collector" in compose["services"]
    # The metrics port stays inside the compose network.
    assert int(port) not in _published(compose["services"]["otel-collector"])


def test_prometheus_service(compose):
    prom = compose["services"]["prometheus"]
    flags = _flags(prom)
    assert "--web.enable-remote-write-receiver" in flags
    features = {f for k, v in flags.items() if k == "--enable-feature" for f in (v or "").split(",")}
    assert "exemplar-storage" in features
    data = {c: h for h, c in _mounts(prom).items()}[flags["--storage.tsdb.path"]]
    assert not data.startswith((".", "/")), "Prometheus data must live in a named volume"
    assert data in compose["volumes"]
    assert prom["ports"] == ["127.0.0.1:9090:9090"]
    assert ":9090/-/ready" in " ".join(prom["healthcheck"]["test"])


def test_tempo_metrics_generator_writes_to_prometheus(tempo_cfg, compose):
    generator = tempo_cfg["metrics_generator"]
    [remote_write] = generator["storage"]["remote_write"]
    url = urlparse(remote_write["url"])
    assert url.hostname == "prometheus" and url.hostname in compose["services"]
    assert url.port in _published(compose["services"]["prometheus"])  # its listen port
    assert url.path == "/api/v1/write"
    assert remote_write["send_exemplars"] is True
    assert set(generator["processor"]) >= {"span_metrics", "service_graphs"}
    processors = tempo_cfg["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert set(processors) >= {"span-metrics", "service-graphs"}
    # Its WAL lives under the persisted volume.
    assert generator["storage"]["path"].startswith("/var/tempo/")
    assert compose["services"]["tempo"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_grafana_prometheus_datasource(datasources, compose):
    prom = datasources["prometheus"]
    assert prom["type"] == "prometheus"
    url = urlparse(prom["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    destinations = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert {d["name"] for d in destinations} == {"trace_id", "traceID"}
    for destination in destinations:
        assert datasources[destination["datasourceUid"]]["type"] == "tempo"
    assert compose["services"]["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_grafana_tempo_links_traces_to_metrics(datasources):
    tempo = datasources["tempo"]["jsonData"]
    assert datasources[tempo["serviceMap"]["datasourceUid"]]["type"] == "prometheus"
    to_metrics = tempo["tracesToMetrics"]
    assert datasources[to_metrics["datasourceUid"]]["type"] == "prometheus"
    assert {t["value"] for t in to_metrics["tags"]} == {"service_name", "gen_ai_request_model"}
    for query in to_metrics["queries"]:
        # "$$" escapes Grafana's env expansion in provisioning files.
        assert "$$__tags" in query["query"] and 'otel_scope_name="otel_callbacks"' in query["query"]


def test_dashboards_provider_reads_the_mounted_folder(compose):
    provider_file = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
    [provider] = _load(provider_file)["providers"]
    assert provider["type"] == "file"
    mounts = _mounts(compose["services"]["grafana"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json")), "no dashboard to provision"

"""Static checks of the local trace stack: docker-compose.yml, collector-config.yaml, deploy/.

No container runtime is needed. When Debian's ``docker-compose`` (v1) binary is on PATH,
the compose file is also validated by it (``docker-compose config -q``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COLLECTOR_FILE = ROOT / "collector-config.yaml"
JAEGER_FILE = ROOT / "deploy" / "jaeger" / "config.yaml"
TEMPO_FILE = ROOT / "deploy" / "tempo" / "tempo.yaml"
DATASOURCES_FILE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"

# What a local user needs on the host, and nothing else.
EXPECTED_HOST_PORTS = {
    ("otel-collector", 4317),
    ("otel-collector", 4318),
    ("jaeger", 16686),
    ("prometheus", 9090),
    ("grafana", 3000),
}


def _load(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose():
    return _load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def collector():
    return _load(COLLECTOR_FILE)


@pytest.fixture(scope="module")
def jaeger_cfg():
    return _load(JAEGER_FILE)


@pytest.fixture(scope="module")
def tempo_cfg():
    return _load(TEMPO_FILE)


@pytest.fixture(scope="module")
def datasources():
    return _load(DATASOURCES_FILE)


def _port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _host_port(endpoint: str) -> tuple[str, int]:
    if "://" in endpoint:
        parsed = urlparse(endpoint)
        return parsed.hostname, parsed.port
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def _parse_port_mapping(spec) -> tuple[str | None, int, int]:
    """Return (host_ip, host_port, container_port) for a short-syntax compose port string."""
    assert isinstance(spec, str), f"use the short 'IP:HOST:CONTAINER' syntax, got {spec!r}"
    spec = spec.split("/", 1)[0]
    parts = spec.split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2])
    if len(parts) == 2:
        return None, int(parts[0]), int(parts[1])
    return None, int(parts[0]), int(parts[0])


def _receiver_ports(config: dict, name: str = "otlp") -> set[int]:
    protocols = config["receivers"][name]["protocols"]
    return {_port_of(p["endpoint"]) for p in protocols.values()}


# --- collector ------------------------------------------------------------------------------


def test_collector_pipelines_reference_defined_components(collector):
    service = collector["service"]
    for ext in service.get("extensions", []):
        assert ext in collector.get("extensions", {}), f"extension {ext!r} used but not defined"
    assert service["pipelines"], "no pipelines"
    for pname, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipeline.get(kind, []):
                assert comp in collector.get(kind, {}), f"{pname}: {kind[:-1]} {comp!r} not defined"
        assert pipeline["receivers"] and pipeline["exporters"], pname


def test_collector_pipeline_shape(collector):
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    # memory_limiter must come first so it can refuse data before anything buffers it.
    assert traces["processors"][0] == "memory_limiter"
    assert "batch" in traces["processors"]
    assert set(traces["exporters"]) == {"otlp/jaeger", "otlp/tempo"}
    # The debug exporter is shipped for troubleshooting but is off by default.
    assert "debug" in collector["exporters"]
    for pipeline in collector["service"]["pipelines"].values():
        assert "debug" not in pipeline["exporters"]
    assert "health_check" in collector["service"]["extensions"]


def test_collector_receives_otlp_on_both_protocols(collector):
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert set(protocols) == {"grpc", "http"}
    assert _port_of(protocols["grpc"]["endpoint"]) == 4317
    assert _port_of(protocols["http"]["endpoint"]) == 4318
    # Inside a container the receiver must listen on all interfaces to be reachable.
    for proto in protocols.values():
        assert proto["endpoint"].startswith("0.0.0.0:")


def test_collector_exporters_target_compose_services(collector, compose, jaeger_cfg, tempo_cfg):
    services = compose["services"]
    backends = {"jaeger": _receiver_ports(jaeger_cfg), "tempo": _receiver_ports(
        {"receivers": tempo_cfg["distributor"]["receivers"]}
    )}
    grpc_ports = {
        "jaeger": _port_of(jaeger_cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]),
        "tempo": _port_of(tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]),
    }
    otlp_exporters = {k: v for k, v in collector["exporters"].items() if k.split("/")[0] == "otlp"}
    assert {k.split("/", 1)[1] for k in otlp_exporters} == set(backends)
    for name, cfg in otlp_exporters.items():
        host, port = _host_port(cfg["endpoint"])
        assert host in services, f"{name} points at {host!r}, not a compose service"
        assert host == name.split("/", 1)[1]
        # The otlp exporter speaks gRPC: the target's gRPC receiver port.
        assert port == grpc_ports[host], f"{name}: {port} is not {host}'s OTLP gRPC port"
        assert port in backends[host]
        assert cfg["tls"]["insecure"] is True


def test_collector_depends_on_backends(compose):
    deps = compose["services"]["otel-collector"]["depends_on"]
    assert deps["jaeger"]["condition"] == "service_healthy"
    assert deps["tempo"]["condition"] == "service_healthy"


def test_collector_mounts_this_config(compose):
    svc = compose["services"]["otel-collector"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
    assert mounts["./collector-config.yaml"] in " ".join(svc["command"])


# --- compose --------------------------------------------------------------------------------


def test_published_ports_are_loopback_only_and_minimal(compose):
    published = set()
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            host_ip, host_port, container_port = _parse_port_mapping(spec)
            assert host_ip == "127.0.0.1", f"{name}: {spec!r} is not bound to 127.0.0.1"
            assert host_port == container_port
            published.add((name, container_port))
        assert "network_mode" not in svc, f"{name}: host networking would bypass port binding"
    assert published == EXPECTED_HOST_PORTS


def test_backend_otlp_ports_not_published(compose):
    for name in ("jaeger", "tempo"):
        for spec in compose["services"][name].get("ports", []):
            _, _, container_port = _parse_port_mapping(spec)
            assert container_port not in (4317, 4318), f"{name} publishes its OTLP port"


def test_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{name}: {image!r} has no tag"
        assert tag != "latest", f"{name}: {image!r} uses latest"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image!r} is not pinned to a release"


def test_expected_images(compose):
    images = {n: s["image"].rsplit(":", 1)[0] for n, s in compose["services"].items()}
    assert images == {
        "otel-collector": "otel/opentelemetry-collector-contrib",
        "jaeger": "jaegertracing/jaeger",
        "tempo": "grafana/tempo",
        "prometheus": "prom/prometheus",
        "grafana": "grafana/grafana",
    }
    assert compose["services"]["jaeger"]["image"].rsplit(":", 1)[1].startswith("2.")


def test_healthchecks_where_the_image_can_run_them(compose):
    for name in ("jaeger", "tempo", "prometheus", "grafana"):
        hc = compose["services"][name]["healthcheck"]
        assert hc["test"][0] in ("CMD", "CMD-SHELL")
        assert "127.0.0.1" in " ".join(hc["test"]) or "localhost" in " ".join(hc["test"])


def test_jaeger_healthcheck_matches_its_config(compose, jaeger_cfg):
    assert "healthcheckv2" in jaeger_cfg["service"]["extensions"]
    port = _port_of(jaeger_cfg["extensions"]["healthcheckv2"]["http"]["endpoint"])
    assert f":{port}/" in " ".join(compose["services"]["jaeger"]["healthcheck"]["test"])


def test_named_volumes_declared(compose):
    declared = set(compose.get("volumes", {}))
    used = set()
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used, "no named volumes"
    assert used == declared
    assert any(v.endswith(":/var/tempo") for v in compose["services"]["tempo"]["volumes"])


def test_bind_mounted_files_exist(compose):
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} missing"


def test_grafana_anonymous_access_is_viewer_only(compose):
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert "local use only" in COMPOSE_FILE.read_text(encoding="utf-8").lower()


def test_jaeger_and_tempo_listen_for_otlp_inside_the_network(jaeger_cfg, tempo_cfg):
    assert _receiver_ports(jaeger_cfg) == {4317, 4318}
    tempo_otlp = tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]
    for proto in tempo_otlp.values():
        assert proto["endpoint"].startswith("0.0.0.0:")
    assert tempo_cfg["storage"]["trace"]["backend"] == "local"
    # The jaeger pipeline stores what it receives.
    pipe = jaeger_cfg["service"]["pipelines"]["traces"]
    assert pipe["exporters"] == ["jaeger_storage_exporter"]
    store = jaeger_cfg["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert store in jaeger_cfg["extensions"]["jaeger_storage"]["backends"]
    assert jaeger_cfg["extensions"]["jaeger_query"]["storage"]["traces"] == store


# --- grafana --------------------------------------------------------------------------------


def test_grafana_datasources_point_at_services(datasources, compose, tempo_cfg, jaeger_cfg):
    by_type = {ds["type"]: ds for ds in datasources["datasources"]}
    assert set(by_type) == {"tempo", "jaeger", "prometheus"}
    services = compose["services"]

    tempo_url = urlparse(by_type["tempo"]["url"])
    assert tempo_url.hostname == "tempo" and "tempo" in services
    assert tempo_url.port == tempo_cfg["server"]["http_listen_port"]

    jaeger_url = urlparse(by_type["jaeger"]["url"])
    assert jaeger_url.hostname == "jaeger" and "jaeger" in services
    assert jaeger_url.port == _port_of(jaeger_cfg["extensions"]["jaeger_query"]["http"]["endpoint"])

    assert sum(1 for ds in datasources["datasources"] if ds.get("isDefault")) == 1


def test_grafana_trace_to_trace_links(datasources):
    uids = {ds["uid"]: ds for ds in datasources["datasources"]}
    for ds in datasources["datasources"]:
        if ds["type"] not in ("tempo", "jaeger"):
            continue
        links = ds.get("correlations", [])
        assert links, f"{ds['name']} has no link to the other backend"
        for link in links:
            assert link["targetUID"] in uids and link["targetUID"] != ds["uid"]
            assert link["config"]["field"] == "traceID"
            # "$$" escapes Grafana's own env expansion in provisioning files.
            assert link["config"]["target"]["query"] == "$${traceID}"


# --- docker-compose itself ------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_validates_the_file():
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("docker-compose binary not installed")
    result = subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

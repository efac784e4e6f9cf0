"""The Kubernetes manifests (deploy/k8s): every overlay builds with `kubectl kustomize`, validates
against the Kubernetes API schemas (kubernetes-validate, strict), and keeps the promises the README
makes: probes on /ready and /health, a drain longer than the server's graceful shutdown, non-root
read-only pods, one GPU per pod in the gpu overlay, secrets only from Secrets, real setting names."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
VERSIONS = ("1.29.0", "1.33.0")  # oldest and newest minor we document


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is needed to build the kustomize overlays")
        pytest.skip("kubectl not installed")
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """overlay -> its objects. The dev overlay's secrets.env (never in git) is made from the example."""
    kubectl = _kubectl()
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree)
    dev = tree / "overlays" / "dev"
    shutil.copy(dev / "secrets.env.example", dev / "secrets.env")
    out = {}
    for overlay in ("cpu", "gpu", "dev"):
        built = subprocess.run([kubectl, "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
        out[overlay] = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    return out


def _one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    return found


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "dev"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_api_schema(rendered, overlay, version):
    import kubernetes_validate

    for obj in rendered[overlay]:
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the field path on any error


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "dev"])
def test_api_deployment_keeps_its_promises(rendered, overlay):
    from colecache.settings import Settings

    objects = rendered[overlay]
    deployment = _one(objects, "Deployment", "colecache-api")
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    # Startup waits for /ready (model loaded, schema migrated): a load that fails is retried by a restart.
    assert api["startupProbe"]["httpGet"]["path"] == "/ready"
    # Drain: preStop sleep + the server's graceful shutdown must fit in the grace period.
    config = _one(objects, "ConfigMap", "colecache-config")["data"]
    pre_stop = int(api["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + int(config["COLECACHE_TIMEOUT_GRACEFUL_SHUTDOWN_S"])
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert api["securityContext"]["readOnlyRootFilesystem"] and not api["securityContext"]["allowPrivilegeEscalation"]
    writable = {m["mountPath"] for m in api["volumeMounts"]}
    assert {config["COLECACHE_DATA_DIR"], "/tmp", config["HF_HOME"].rsplit("/", 1)[0]} <= writable | {"/tmp"}
    assert api["resources"]["requests"]["cpu"] and api["resources"]["requests"]["memory"]
    assert not pod["automountServiceAccountToken"]
    # Every COLECACHE_* setting in the ConfigMap is a real setting, and the lot is valid.
    names = {"COLECACHE_" + n.upper() for n in Settings.model_fields}
    assert {k for k in config if k.startswith("COLECACHE_")} <= names
    Settings(**{k.removeprefix("COLECACHE_").lower(): v for k, v in config.items() if k.startswith("COLECACHE_")})
    assert config["COLECACHE_MIGRATE_ON_START"] == "false"  # the Job migrates
    # Credentials come from a Secret, never from the ConfigMap.
    secret_keys = {
        e["valueFrom"]["secretKeyRef"]["key"] for e in api["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {"api-keys", "database-url"} <= secret_keys
    assert not any(k in config for k in ("COLECACHE_API_KEYS", "COLECACHE_DATABASE_URL", "COLECACHE_REDIS_URL"))
    # Service and PodDisruptionBudget select exactly the api pods.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        obj = _one(objects, kind, "colecache-api")
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items() and selector["app.kubernetes.io/component"] == "api"
    job = _one(objects, "Job", "colecache-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["colecache", "migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == api["image"]


def test_gpu_overlay_asks_one_gpu_per_pod(rendered):
    api = _one(rendered["gpu"], "Deployment", "colecache-api")["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in api["tolerations"])
    assert _one(rendered["gpu"], "ConfigMap", "colecache-config")["data"]["COLECACHE_DEVICE"] == "cuda"
    cpu = _one(rendered["cpu"], "Deployment", "colecache-api")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {}) and cpu["image"].endswith(":cpu")


def test_dev_overlay_runs_its_own_stores_with_generated_secrets(rendered):
    objects = rendered["dev"]
    secret = _one(objects, "Secret", "colecache-secrets")
    assert set(secret["data"]) == {"api-keys", "postgres-password", "database-url", "redis-url"}
    api = _one(objects, "Deployment", "colecache-api")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert refs == {secret["metadata"]["name"]}  # the hashed name is wired everywhere
    assert _one(objects, "StatefulSet", "postgres") and _one(objects, "Deployment", "redis")
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objects} == {"colecache-dev"}
    assert _one(objects, "Namespace", "colecache-dev")  # `kubectl apply` needs it first
    assert "deploy/k8s/overlays/dev/secrets.env" in (REPO / ".gitignore").read_text().split()  # never committed


def test_the_validator_would_catch_a_broken_manifest(rendered):
    import kubernetes_validate

    broken = yaml.safe_load(yaml.safe_dump(_one(rendered["cpu"], "Deployment", "colecache-api")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(_one(rendered["cpu"], "Deployment", "colecache-api")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)

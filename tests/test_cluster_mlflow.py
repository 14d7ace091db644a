"""cluster/mlflow.yaml: the MLflow server the KubeRay manifests report to asks for a user and
password, binds the pod's own address (never 0.0.0.0), accepts only its service's host
names, and every Ray container of the manifests carries the credentials from a Secret (not
from the runtime env, which the dashboard shows). No cluster: the files as parsed."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
SERVICE = "mlflow.mlflow.svc.cluster.local:5000"


def _docs(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / name).read_text())}


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


def test_the_server_authenticates_and_binds_the_pod_address() -> None:
    docs = _docs("mlflow.yaml")
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow", "server"]
    flags = _flags(container["args"])
    assert flags["app-name"] == "basic-auth"
    assert flags["host"] == "$(POD_IP)" and "0.0.0.0" not in " ".join(container["args"])
    assert SERVICE in flags["allowed-hosts"].split(",")
    assert "disable-security-middleware" not in flags
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                 "MLFLOW_BACKEND_STORE_URI"):  # fmt: skip
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-server", name
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith("/etc/mlflow-auth/")
    service = docs["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    host, port = SERVICE.split(".svc.")[0], SERVICE.rsplit(":", 1)[1]
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}" == host
    assert service["spec"]["ports"][0]["port"] == int(port)
    assert docs["Ingress"]["spec"]["tls"], "the UI goes out over TLS only"
    assert docs["NetworkPolicy"]["spec"]["policyTypes"] == ["Ingress"]


def _containers(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_every_ray_container_reaches_the_server_with_credentials_from_a_secret() -> None:
    for name in ("raycluster.yaml", "rayjob.yaml"):
        doc = yaml.safe_load((CLUSTER / name).read_text())
        for container in _containers(doc):
            env = {e["name"]: e for e in container["env"]}
            for key, field in (("MLFLOW_TRACKING_USERNAME", "username"),
                               ("MLFLOW_TRACKING_PASSWORD", "password")):  # fmt: skip
                ref = env[key]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": "mlflow-client", "key": field}, (name, key)
        runtime_env = doc["spec"].get("runtimeEnvYAML", "")
        assert "MLFLOW_TRACKING_PASSWORD" not in runtime_env
    assert "MLFLOW_TRACKING_PASSWORD" not in (CLUSTER / "runtime_env.yaml").read_text()

"""The cluster files: `ray_config.yaml` against the schema Ray ships and the checks `ray up`
runs before it contacts a cloud; the KubeRay manifests and the runtime env parse and hold
what KubeRay and Ray need. No network, no cluster."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from pipelines.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def _yaml(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


@pytest.fixture(scope="module")
def launcher() -> dict:
    return _yaml(ROOT / "ray_config.yaml")


def test_ray_config_matches_the_schema_ray_ships(launcher: dict) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)


def test_ray_config_passes_the_checks_of_ray_up(launcher: dict) -> None:
    # What `ray up` does before the provider's bootstrap (the first step that needs AWS).
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(launcher)
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_ray_config_has_cpu_and_gpu_workers_and_installs_the_project(launcher: dict) -> None:
    types = launcher["available_node_types"]
    workers = {name: t for name, t in types.items() if name != launcher["head_node_type"]}
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers.values())
    assert any("GPU" not in t["resources"] and t["resources"]["CPU"] >= 1 for t in workers.values())
    setup = " ".join(launcher["setup_commands"])
    assert "torch==" in setup and "pip install" in setup and "~/mnad" in setup
    assert launcher["file_mounts"]["~/mnad"] == "."


def test_ray_config_is_private_and_authenticated(launcher: dict) -> None:
    head = " ".join(launcher["head_start_ray_commands"])
    worker = " ".join(launcher["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "--host 127.0.0.1" in head  # the MLflow server
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert "~/.ray/auth_token" in launcher["file_mounts"]


# --- KubeRay ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _yaml(CLUSTER / "raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _yaml(CLUSTER / "rayjob.yaml")


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_raycluster_has_a_head_and_cpu_and_gpu_worker_groups(raycluster: dict) -> None:
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    (head_container,) = _containers(head["template"])
    assert head_container["image"].startswith("rayproject/ray:" + ray.__version__)
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpus = [
        g for g in groups.values()
        if "nvidia.com/gpu" in _containers(g["template"])[0]["resources"]["limits"]
    ]  # fmt: skip
    assert len(gpus) == 1 and len(groups) == 2
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = _containers(group["template"])
        limits = container["resources"]["limits"]
        assert limits["cpu"] and limits["memory"]


def test_rayjob_runs_mnad_run_on_a_spec(rayjob: dict, raycluster: dict) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["mnad", "run"] and argv[2].endswith(".yaml")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert spec["rayClusterSpec"]["workerGroupSpecs"] == raycluster["spec"]["workerGroupSpecs"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    # The spec it runs is one of the examples, shipped in the working dir.
    assert (ROOT / argv[2]).is_file()


def test_runtime_env_is_what_ray_accepts() -> None:
    from ray.runtime_env import RuntimeEnv

    doc = _yaml(CLUSTER / "runtime_env.yaml")
    env = RuntimeEnv(**doc)  # Ray's own validation of the fields
    assert env["working_dir"] == "." and "MLFLOW_TRACKING_URI" in env["env_vars"]
    # The checkout itself is installed (the `mnad` command), with torch pinned beside it.
    assert env["pip"]["packages"] == ["torch==2.13.0", "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"]


def test_rayjob_runtime_env_is_the_runtime_env_with_a_remote_working_dir(rayjob: dict) -> None:
    local = _yaml(CLUSTER / "runtime_env.yaml")
    remote = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert remote["working_dir"].startswith(("https://", "s3://", "gs://"))
    assert remote["pip"] == local["pip"] and remote["env_vars"] == local["env_vars"]


def test_example_specs_parse(monkeypatch) -> None:
    # The cluster examples take the MLflow server from the cluster's environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.train is not None and spec.score, path

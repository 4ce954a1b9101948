"""cluster/: the AWS cluster-launcher YAML through Ray's own config validation, and the KubeRay manifests
(RayCluster, RayJob, RayService) against KubeRay's CRD schemas and the rules its operator enforces.

Nothing here needs a cloud or a Kubernetes cluster: Ray's validation is the code ``ray up`` runs before
it touches AWS, and KubeRay's schemas are vendored (tests/kuberay/, made by tests/kuberay/vendor_crds.py
from KubeRay's own CRDs). tests/test_configs.py checks the token and shared-volume wiring of the AWS file
and the RayJob; tests/test_cluster.py runs stages on real local clusters.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY_FILES = sorted(CLUSTER.glob("kuberay-*.yaml"))
SHARED = "/mnt/shared"


def _pinned_ray_version() -> str:
    """The Ray version raychat pins (pyproject): what every node, image and client must run."""
    deps = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if d.startswith("ray[")]
    return ray_dep.split("==")[1]


# -- AWS: Ray's own cluster-launcher validation ------------------------------------------------------


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "aws-autoscaling.yaml").read_text())


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does before it calls AWS: fill in the provider's defaults, merge the setup
    commands, then validate against ray/autoscaler/ray-schema.json and the node-type rules
    (ray.autoscaler._private.commands._bootstrap_config). Only the instance-type lookup is left out:
    it asks AWS, and every node type here declares its resources itself."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_aws_config_passes_rays_own_validation(aws: dict[str, Any]) -> None:
    prepared = _prepared(aws)
    assert prepared["head_node_type"] == "head"
    assert prepared["available_node_types"]["head"]["max_workers"] == 0  # filled in: the head is one node
    # the validation has teeth: a misspelt node-type key and more minimum workers than the cap are refused
    typo = copy.deepcopy(aws)
    typo["available_node_types"]["gpu_h100"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        _prepared(typo)
    crowded = copy.deepcopy(aws)
    crowded["available_node_types"]["cpu_worker"]["min_workers"] = aws["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        _prepared(crowded)


def _setup_commands(prepared: dict[str, Any], node_type: str) -> list[str]:
    """The setup a node of ``node_type`` runs: the head's merged list, or a worker type's own
    ``worker_setup_commands``, which replace the global ones (StandardAutoscaler's
    _get_node_type_specific_fields)."""
    if node_type == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    return prepared["available_node_types"][node_type].get(
        "worker_setup_commands", prepared["worker_setup_commands"]
    )


def _raychat_spec(command: list[str]) -> str | None:
    """The raychat requirement an install command names (``raychat @ ...`` or ``raychat[gpu] @ ...``)."""
    return next((arg for arg in command if re.match(r"raychat(\[[a-z,]+\])? @ ", arg)), None)


def test_aws_node_types_scale_and_install_raychat(aws: dict[str, Any]) -> None:
    prepared = _prepared(aws)
    types = prepared["available_node_types"]
    gpu_types = {name for name, t in types.items() if t["resources"].get("GPU")}
    assert len(gpu_types) >= 3, "A10G, A100 and H100 nodes"
    assert types["head"]["resources"] == {"CPU": 0}  # the head runs no tasks
    for name, node in types.items():
        if name == "head":
            continue
        assert 0 == node["min_workers"] < node["max_workers"] <= prepared["max_workers"], name
        resources = node["resources"]
        assert resources.get("CPU", 0) > 0, name
        if name in gpu_types:  # a GPU kind the autoscaler can be asked for by name (README)
            (kind,) = [r for r in resources if r.startswith("accelerator_type:")]
            assert resources[kind] == 1 and resources["GPU"] in (1, 2, 4, 8), name
    for name in types:
        raw = _setup_commands(prepared, name)
        setup = [shlex.split(c) for c in raw]
        installs = [(i, c) for i, c in enumerate(setup) if c[1:3] == ["pip", "install"] and _raychat_spec(c)]
        assert len(installs) == 1, (name, setup)
        (at, install), spec = installs[0], _raychat_spec(installs[0][1])
        # Python 3.11 first (the AMI has 3.10), then raychat; from then on `ray` and `python` are its
        assert "--python 3.11 ~/raychat-env" in raw[0], name
        assert "'export PATH=$HOME/raychat-env/bin:$PATH' >> ~/.bashrc" in raw[0], name
        assert at > 0 and install[install.index("--python") + 1] == "~/raychat-env/bin/python", name
        if name in gpu_types:
            assert spec.startswith("raychat[gpu] @"), (name, spec)  # CUDA torch and vLLM
            assert not any(a.startswith("--torch-backend") for a in install), name
        else:
            assert spec.startswith("raychat @") and "--torch-backend=cpu" in install, (name, spec)
    assert any("boto3" in c for c in _setup_commands(prepared, "head"))  # the autoscaler launches EC2 nodes
    # every start command runs the environment's ray (no absolute path to another one)
    starts = prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
    assert all(shlex.split(c)[-1] != "ray" and " ray " in f" {c} " for c in starts if "ray start" in c)


# -- KubeRay: the CRD schemas and the operator's rules -----------------------------------------------


def _strict(schema: Any) -> Any:
    """Unknown fields refused, as ``kubectl apply`` (strict field validation, the default since
    Kubernetes 1.27) refuses them: every object schema that lists its properties and neither allows
    more (additionalProperties) nor keeps unknown fields (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_strict(v) if k not in ("properties", "patternProperties") else v) for k, v in schema.items()}
    for key in ("properties", "patternProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = {name: _strict(s) for name, s in schema[key].items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    (path,) = sorted((REPO / "tests" / "kuberay").glob("crds-*.json"))
    vendored = _strict(json.loads(path.read_text()))
    return {
        kind: jsonschema.Draft202012Validator({"$defs": vendored["$defs"], **vendored[kind]})
        for kind in ("RayCluster", "RayJob", "RayService")
    }


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _ray_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in _docs(path) if d["apiVersion"] == "ray.io/v1"]


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "RayCluster": lambda s: s,
        "RayJob": lambda s: s["rayClusterSpec"],
        "RayService": lambda s: s["rayClusterConfig"],
    }[doc["kind"]](doc["spec"])


def _schema_errors(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_kuberay_manifests_are_one_of_each_kind() -> None:
    kinds = {doc["kind"]: path.name for path in KUBERAY_FILES for doc in _ray_docs(path)}
    assert kinds == {
        "RayCluster": "kuberay-raycluster.yaml",
        "RayJob": "kuberay-rayjob.yaml",
        "RayService": "kuberay-rayservice.yaml",
    }


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=[p.stem for p in KUBERAY_FILES])
def test_kuberay_manifest_matches_the_crd_schema(path: Path, crd_validators) -> None:
    for doc in _ray_docs(path):
        assert _schema_errors(crd_validators[doc["kind"]], doc) == []


def test_the_crd_schema_check_has_teeth(crd_validators) -> None:
    """A misspelt field, a number where the CRD wants a string and a missing required field are found."""
    (job,) = _ray_docs(CLUSTER / "kuberay-rayjob.yaml")
    spec = job["spec"]["rayClusterSpec"]
    spec["enableInTreeAutoScaling"] = spec.pop("enableInTreeAutoscaling")
    spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    del spec["workerGroupSpecs"][0]["groupName"]
    errors = _schema_errors(crd_validators["RayJob"], job)
    assert any("enableInTreeAutoScaling" in e for e in errors), errors
    assert any("rayStartParams.num-cpus: 0 is not of type 'string'" in e for e in errors), errors
    assert any("'groupName' is a required property" in e for e in errors), errors


DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}  # utils/constant.go: MaxRay*NameLength


def kuberay_rule_violations(doc: dict[str, Any]) -> list[str]:
    """What KubeRay's operator refuses beyond the schema (ray-operator/controllers/ray/utils/validation.go
    at v1.7.0: ValidateRay{Cluster,Job,Service}{Metadata,Spec}), for the fields these manifests use."""
    problems = []
    name = doc["metadata"]["name"]
    if not DNS1035.fullmatch(name) or len(name) > MAX_NAME[doc["kind"]]:
        problems.append(f"name {name!r}: a DNS-1035 label of at most {MAX_NAME[doc['kind']]} characters")
    spec = _cluster_spec(doc)
    groups = [("head", spec["headGroupSpec"])] + [
        (g["groupName"], g) for g in spec.get("workerGroupSpecs", [])
    ]
    autoscaling = spec.get("enableInTreeAutoscaling", False)
    for group, g in groups:
        if not g["template"]["spec"].get("containers"):
            problems.append(f"{group}: no container")
        start = g.get("rayStartParams", {})
        if any(start.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and g.get("resources"):
            problems.append(f"{group}: resources in both rayStartParams and resources")
        if "labels" in start:
            problems.append(f"{group}: rayStartParams['labels'] (use the group's labels field)")
        if group == "head":
            continue
        low, high = g.get("minReplicas"), g.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            problems.append(f"{group}: minReplicas and maxReplicas are required without autoscaling")
        if (
            (low is not None and low < 0)
            or (high is not None and high < 0)
            or (None not in (low, high) and low > high)
        ):
            problems.append(f"{group}: replicas {low}..{high}")
    auth = spec.get("authOptions") or {}
    if auth.get("mode", "token" if auth else None) == "token":
        version = tuple(int(p) for p in str(spec.get("rayVersion", "0")).split(".")[:3])
        if version < (2, 52, 0):
            problems.append(
                f"authOptions.mode token needs rayVersion >= 2.52.0, got {spec.get('rayVersion')}"
            )
        if auth.get("enableK8sTokenAuth") and doc["kind"] != "RayCluster":
            problems.append("enableK8sTokenAuth is not supported for RayJob or RayService")
    if doc["kind"] == "RayJob":
        job = doc["spec"]
        if "rayClusterSpec" not in job and not job.get("clusterSelector"):
            problems.append("one of rayClusterSpec or clusterSelector must be set")
        if job.get("ttlSecondsAfterFinished", 0) < 0 or job.get("backoffLimit", 0) < 0:
            problems.append("ttlSecondsAfterFinished and backoffLimit must not be negative")
        if not job.get("shutdownAfterJobFinishes") and "ttlSecondsAfterFinished" in job:
            problems.append("ttlSecondsAfterFinished without shutdownAfterJobFinishes")
        if not isinstance(yaml.safe_load(job.get("runtimeEnvYAML", "") or "{}"), dict):
            problems.append("runtimeEnvYAML is not a YAML mapping")
    if doc["kind"] == "RayService":
        if spec["headGroupSpec"].get("headService", {}).get("metadata", {}).get("name"):
            problems.append("headService.metadata.name must not be set in a RayService")
    return problems


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=[p.stem for p in KUBERAY_FILES])
def test_kuberay_manifest_keeps_the_operators_rules(path: Path) -> None:
    for doc in _ray_docs(path):
        assert kuberay_rule_violations(doc) == []
        spec = _cluster_spec(doc)
        # what the issue asks of every cluster here: autoscaling, a head that runs no tasks, CPU and GPU
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
            (container,) = group["template"]["spec"]["containers"]
            gpus = container["resources"]["limits"].get("nvidia.com/gpu")
            assert (gpus is not None) == container["image"].endswith("-gpu"), group["groupName"]


def test_the_operators_rules_are_checked() -> None:
    (job,) = _ray_docs(CLUSTER / "kuberay-rayjob.yaml")
    job["metadata"]["name"] = "Raychat_Clean"
    spec = job["spec"]["rayClusterSpec"]
    spec["rayVersion"] = "2.51.0"
    spec["workerGroupSpecs"][0]["minReplicas"] = 20
    spec["workerGroupSpecs"][1]["resources"] = {"GPU": "1"}
    spec["workerGroupSpecs"][1]["rayStartParams"]["num-gpus"] = "1"
    job["spec"].pop("rayClusterSpec")
    job["spec"]["rayClusterSpec"] = spec
    job["spec"]["shutdownAfterJobFinishes"] = False
    assert len(kuberay_rule_violations(job)) == 5, kuberay_rule_violations(job)


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=[p.stem for p in KUBERAY_FILES])
def test_every_ray_pod_has_the_token_and_the_shared_run_directory(path: Path) -> None:
    docs = _docs(path)
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    # one claim for all three files: kubectl apply of any of them creates or keeps the same volume
    assert pvc == _docs(CLUSTER / "kuberay-rayjob.yaml")[0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for doc in _ray_docs(path):
        spec = _cluster_spec(doc)
        secret = spec["authOptions"]["secretName"]
        assert spec["authOptions"]["mode"] == "token"
        pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
        for pod in pods:
            (container,) = pod["spec"]["containers"]
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}
            volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
            assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
            assert {"name": "shared", "mountPath": SHARED} in container["volumeMounts"]
        # the secret the header tells you to create, with the key KubeRay reads (auth_token)
        assert f"kubectl create secret generic {secret} --from-literal=auth_token=" in path.read_text()


def test_every_cluster_runs_the_ray_version_raychat_pins() -> None:
    """A client (``ray job submit``), the nodes and the images must run one Ray version."""
    version = _pinned_ray_version()
    images = set()
    for path in KUBERAY_FILES:
        for doc in _ray_docs(path):
            spec = _cluster_spec(doc)
            assert spec["rayVersion"] == version, path.name
            pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
            images |= {c["image"] for pod in pods for c in pod["spec"]["containers"]}
    assert images == {f"rayproject/ray:{version}-py311", f"rayproject/ray:{version}-py311-gpu"}


def test_rayjob_runs_a_stage_on_the_shared_run_directory() -> None:
    from pipelines.config import load_config
    from pipelines.stages import STAGES

    (job,) = _ray_docs(CLUSTER / "kuberay-rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2].split(".")[0] == "pipelines"
    assert argv[2].split(".")[1] in {s.name for s in STAGES}  # python -m pipelines.<stage>
    config = argv[argv.index("--config") + 1]
    assert argv[argv.index("--run-dir") + 1] == load_config(REPO / config, []).run_dir
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(runtime_env) == {"working_dir", "pip"}
    assert job["spec"]["shutdownAfterJobFinishes"] and job["spec"]["backoffLimit"] >= 1


def test_rayservice_serves_the_app_with_a_valid_serve_config() -> None:
    """serveConfigV2 is a Ray Serve config: validated by Serve's own schema (what ``serve deploy`` and
    KubeRay's call to the Serve REST API accept), its autoscaling by Serve's AutoscalingConfig."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from pipelines.config import load_config

    (service,) = _ray_docs(CLUSTER / "kuberay-rayservice.yaml")
    serve = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    (app,) = serve.applications
    assert (app.name, app.import_path, app.route_prefix) == ("raychat", "serving.app:build_app", "/")
    assert set(app.args) == {"run_dir", "config"}
    assert app.args["run_dir"] == load_config(REPO / app.args["config"], []).run_dir
    assert app.args["run_dir"].startswith(f"{SHARED}/")
    assert set(app.runtime_env) == {"working_dir", "pip"}
    (deployment,) = app.deployments
    scaling = deployment.autoscaling_config
    assert set(scaling) <= set(AutoscalingConfig.model_fields), (
        "a misspelt autoscaling key is ignored by Serve"
    )
    scaling = AutoscalingConfig(**scaling)
    assert 1 <= scaling.min_replicas < scaling.max_replicas
    # KubeRay's autoscaler can add a GPU pod for every replica Serve asks for
    (gpu,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert deployment.ray_actor_options.num_gpus == 1
    assert gpu["maxReplicas"] >= scaling.max_replicas and gpu["minReplicas"] >= scaling.min_replicas

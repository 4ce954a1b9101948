"""Every run config shipped in configs/ loads and validates, GPU ones included (CI has no GPU), and the
cluster manifests give every node the token and the shared run directory they say they do."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import load_config
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value a YAML mapping sets."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _at(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if data is None:  # a mapping whose default is null (resources_per_worker)
            return None
        data = data[part]
    return data


def _as_written(loaded: Any, written: Any) -> Any:
    """``loaded`` cut to the keys ``written`` gives, in lists of mappings too (``distill.prompts``:
    each source written with some keys, loaded with all of them)."""
    if isinstance(written, list) and isinstance(loaded, list) and len(written) == len(loaded):
        return [_as_written(x, w) for x, w in zip(loaded, written, strict=True)]
    if isinstance(written, dict) and isinstance(loaded, dict):
        return {k: _as_written(loaded.get(k), v) for k, v in written.items()}
    return loaded


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_loads_with_every_value_it_sets(path: Path) -> None:
    """Nothing the file says is dropped, renamed or changed on the way in (the run directory included)."""
    written = yaml.safe_load(path.read_text())
    loaded = load_config(path, []).model_dump(mode="json")
    leaves = list(_leaves(written))
    assert "run_dir" in dict(leaves)
    assert [(key, _as_written(_at(loaded, key), value)) for key, value in leaves] == leaves


def test_tiny_config_is_the_defaults_but_for_the_keys_it_names() -> None:
    """configs/tiny.yaml's header names every value in it that is not the built-in default."""
    text = (REPO / "configs" / "tiny.yaml").read_text()
    written = dict(_leaves(yaml.safe_load(text)))
    defaults = load_config(None, []).model_dump(mode="json")
    kinds = {name: entry["kind"] for name, entry in yaml.safe_load(text).get("stages", {}).items()}

    def default(key: str) -> Any:
        """The built-in value of ``key``; a stage instance's settings default to its kind's."""
        section, dot, rest = key.partition(".")
        return None if section == "stages" else _at(defaults, kinds.get(section, section) + dot + rest)

    differ = {key for key, value in written.items() if _as_written(default(key), value) != value}
    assert differ == {
        "stages.pretrain_student.kind",
        "pretrain_student.model.depth",
        "pretrain_student.model.hidden_size",
        "pretrain_student.model.num_layers",
        "pretrain_student.model.num_heads",
        "pretrain_student.model.num_kv_heads",
        "pretrain_student.output_name",
        "distill.student_init",
        "clean.url.blocklists",
        "ray.object_store_memory_mb",
        "world.arithmetic_train",
        "world.arithmetic_max_steps",
        "world.arithmetic_number_scale",
        "sft_data.splits.arithmetic_cold_start",
        "sft.pretrain_replay",
        "grpo.control.enabled",
        "rm.seq_len",
        "serve.run_models",
        "serve.models",
        "serve.model_defaults.num_cpus",
        "distill.prompts",
        "distill.max_steps",
        "pretrain.resources_per_worker.CPU",
        "pretrain_student.resources_per_worker.CPU",
        "sft.resources_per_worker.CPU",
        "rm.resources_per_worker.CPU",
        "distill.resources_per_worker.CPU",
    }
    header = text.split("run_dir:")[0]
    # an instance is named once, with what it is; its settings are its own section's comments
    assert all(key in header or key.split(".")[0] in kinds or key.startswith("stages.") for key in differ)
    assert all(name in header for name in kinds)


def test_gpu_config_is_a_real_run() -> None:
    cfg = load_config(REPO / "configs" / "gpu-124m.yaml", [])
    pre = cfg.pretrain
    assert pre.use_gpu and pre.num_workers > 1 and pre.compile
    assert pre.global_batch_tokens % (pre.seq_len * pre.micro_batch_size * pre.num_workers) == 0


SHARED = "/mnt/shared"


def test_aws_cluster_gives_every_node_the_token_and_the_shared_run_directory() -> None:
    text = (REPO / "cluster" / "aws-autoscaling.yaml").read_text()
    aws = yaml.safe_load(text)
    # the token: copied to the path Ray reads (~/.ray/auth_token of the user the nodes run as) ...
    assert aws["file_mounts"] == {f"/home/{aws['auth']['ssh_user']}/.ray/auth_token": "~/.ray/auth_token"}
    # ... and used: a joining node turns token auth on only with RAY_AUTH_MODE=token (tests/test_token_auth.py)
    starts = [
        c for c in aws["head_start_ray_commands"] + aws["worker_start_ray_commands"] if "ray start" in c
    ]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts), starts
    assert "RAY_AUTH_MODE=disabled" not in text
    # the run directory: an NFS file system mounted at /mnt/shared on every node, where the GPU run writes
    mounts = [shlex.split(c) for c in aws["initialization_commands"] if "mount -t nfs4" in c]
    assert len(mounts) == 1 and mounts[0][-1] == SHARED, aws["initialization_commands"]
    assert load_config(REPO / "configs" / "gpu-124m.yaml", []).run_dir.startswith(f"{SHARED}/")


def test_kuberay_job_gives_every_pod_the_token_and_the_shared_run_directory() -> None:
    text = (REPO / "cluster" / "kuberay-rayjob.yaml").read_text()
    pvc, job = yaml.safe_load_all(text)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    assert len(pods) == 3
    secrets = set()
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        secrets.add((ref["name"], ref["key"]))
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert {"name": "shared", "mountPath": SHARED} in container["volumeMounts"]
    # one token for all pods, the secret the header tells you to create
    ((name, key),) = secrets
    assert f"kubectl create secret generic {name} --from-literal={key}=" in text
    # the run directory the job writes is on the shared volume
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[entrypoint.index("--run-dir") + 1].startswith(f"{SHARED}/")


@pytest.mark.parametrize("name", ["r1-recipe", "gpu-r1-gsm8k"])
def test_the_r1_recipe_runs_its_steps_in_order(name: str) -> None:
    """The R1 recipe configs: cold-start SFT, GRPO, rejection sampling + SFT, a final GRPO, then
    distillation, each consuming the step before it."""
    from pipelines.stages import Graph

    g = Graph(load_config(REPO / "configs" / f"{name}.yaml", []))
    steps = ["sft", "grpo", "sft_rs", "grpo_final", "distill"]
    assert g.order(["world", "clean", "tokenize", "pretrain", *steps])[4:] == steps
    assert g.consumes("grpo")[0] == "sft"
    assert g.consumes("sft_rs")[0] == "grpo" and "pretrain" in g.consumes(
        "sft_rs"
    )  # RL teacher, base student
    assert g.consumes("grpo_final")[0] == "sft_rs" and g.consumes("distill")[0] == "grpo_final"


def test_an_empty_run_dir_is_refused_not_the_current_folder(capsys) -> None:
    """`--set run_dir=` ran the stage in the current folder (the checkout), `--run-dir ''` on runs/tiny."""
    from pipelines.cli import main

    for argv in (["sft", "--set", "run_dir="], ["sft", "--run-dir", ""]):  # the latter ran on runs/tiny
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "run_dir: String should have at least 1 character" in err, (argv, err)


def test_a_local_ray_with_no_cpu_is_refused(tmp_path, capsys) -> None:
    """ray.num_cpus=0 started a Ray with no CPU, where pretraining waited for ever for its worker;
    a negative count was a ValueError traceback from ray.init."""
    from pipelines.cli import main

    for key in ("ray.num_cpus=0", "ray.num_cpus=-2", "ray.object_store_memory_mb=0"):
        assert main(["pretrain", "--set", key, "--run-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "Input should be greater than or equal to 1" in err and key.split("=")[0] in err, (key, err)


def test_a_blank_api_key_is_refused_and_no_key_is_printed() -> None:
    """A blank key was dropped, and a list of only blank keys served with no authentication at all; an
    error about the keys must not print them."""
    with pytest.raises(ConfigError, match="an empty key would leave the server open") as e:
        load_config(None, ['serve.api_keys=["topsecret", " "]'])
    assert "topsecret" not in str(e.value)
    assert (
        load_config(None, ['serve.api_keys=["topsecret"]']).serve.api_keys[0].get_secret_value()
        == "topsecret"
    )


def test_config_errors_show_values_unless_the_key_may_hold_a_secret() -> None:
    """`tokenize.input: ""` was reported as "a value not shown: it may be a secret" (the key holds "token")."""
    with pytest.raises(ConfigError) as e:
        load_config(None, ['tokenize.input=""', "sft.eval.max_new_tokens.search_eval=-1"])
    assert "tokenize.input: String should have at least 1 character (got '')" in str(e.value)
    assert "(got -1)" in str(e.value) and "not shown" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, ["serve.api_keys=12345"])
    assert "12345" not in str(e.value) and "not shown" in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("pretrain.resources_per_worker={CPU: -1}", "must be finite and not negative"),
        ("sft.resources_per_worker={CPU: 0}", "asks for nothing"),
        ("rm.resources_per_worker={CPU: .nan}", "must be finite"),
        ("sft.eval.max_new_tokens.known_eval=0", "Input should be greater than 0"),
    ],
)
def test_worker_resources_and_reply_lengths_must_be_possible(override, message) -> None:
    """`{CPU: -1}` reached Ray Train; a reply of 0 or -1 new tokens reached the engine."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])

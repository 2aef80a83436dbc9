"""cluster/: every YAML parses; the Ray cluster-launcher configs pass Ray's own validation (and a
broken copy does not); the KubeRay RayJob has every field the RayJob CRD requires; the SLURM
script is valid bash and, run with stand-ins for srun / scontrol / ray, starts a head and a
worker per node, runs the study and stops everything. No test starts Ray or touches a network.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = ("aws.yaml", "gcp.yaml")
SBATCH = CLUSTER / "slurm.sbatch"


def load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def ray_validate(config: dict) -> None:
    """What `ray up` does before it contacts the cloud (ray.autoscaler._private.commands.
    _bootstrap_config): fill in the provider's defaults, then validate against ray-schema.json
    plus Ray's own cross-field checks. Raises jsonschema.ValidationError or ValueError."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


# -- every file -------------------------------------------------------------------------------


def test_cluster_folder_has_the_expected_files() -> None:
    names = {p.name for p in CLUSTER.iterdir()}
    assert {*LAUNCHER_CONFIGS, "kuberay-rayjob.yaml", "slurm.sbatch", "README.md"} <= names


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_parses_to_a_mapping(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)


SECRETS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key setting": re.compile(r"aws_secret_access_key|aws_session_token", re.I),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GCP service-account key": re.compile(r'"private_key(?:_id)?"\s*:'),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[0-9A-Za-z]{36}\b"),
    "12-digit AWS account id": re.compile(r"(?<![\d.])\d{12}(?![\d.])"),
    "password in a URL": re.compile(r"://[^/\s:@]+:[^/\s@]+@"),
}


def test_the_secret_patterns_catch_planted_secrets() -> None:
    planted = {
        "AWS access key id": "key: AKIA" + "ABCDEFGHIJKLMNOP",
        "AWS secret key setting": "AWS_SECRET_ACCESS_KEY=x",
        "private key": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "GCP service-account key": '{"private_key_id": "abc"}',
        "Google API key": "AIza" + "x" * 35,
        "GitHub token": "ghp_" + "a" * 36,
        "12-digit AWS account id": "arn:aws:iam::" + "123456789012" + ":role/x",
        "password in a URL": "http://user:" + "hunter2@mlflow:5000",
    }
    for name, text in planted.items():
        assert SECRETS[name].search(text), name


@pytest.mark.parametrize(
    "path", sorted(p for p in CLUSTER.iterdir() if p.is_file()), ids=lambda p: p.name
)
def test_no_secrets_and_obvious_placeholders(path: Path) -> None:
    text = path.read_text()
    for name, pattern in SECRETS.items():
        found = pattern.search(text)
        assert not found, f"{path.name}: looks like a {name}: {found.group(0)!r}"
    # Buckets, hosts and accounts are placeholders anyone sees must be replaced.
    for uri in re.findall(r"\b(?:s3|gs)://[^\s'\"`)]+", text):
        assert "YOUR-" in uri, f"{path.name}: {uri} is not an obvious placeholder"
    for uri in re.findall(r"https?://[^\s'\"`)]*:5000", text):
        assert "YOUR-" in uri or "127.0.0.1" in uri, f"{path.name}: MLflow host {uri}"


# -- Ray cluster launcher configs ---------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_validation(name: str) -> None:
    ray_validate(load(name))


def _misspelled_key(c: dict) -> None:
    c["max_worker"] = c.pop("max_workers")


def _word_for_max_workers(c: dict) -> None:
    c["max_workers"] = "lots"


def _fractional_gpu_resource(c: dict) -> None:
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5


def _unknown_head_type(c: dict) -> None:
    c["head_node_type"] = "no-such-type"


def _min_workers_above_max_workers(c: dict) -> None:
    c["available_node_types"]["gpu_worker"]["min_workers"] = c["max_workers"] + 1


def _typo_in_a_node_type(c: dict) -> None:
    c["available_node_types"]["gpu_worker"]["min_worker"] = 1


BROKEN = [
    _misspelled_key,
    _word_for_max_workers,
    _fractional_gpu_resource,
    _unknown_head_type,
    _min_workers_above_max_workers,
    _typo_in_a_node_type,
]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
@pytest.mark.parametrize("breakage", BROKEN, ids=lambda f: f.__name__.strip("_"))
def test_rays_validation_rejects_a_broken_copy(name: str, breakage: Any) -> None:
    config = load(name)
    breakage(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        ray_validate(config)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_gpu_workers_and_autoscaling_bounds(name: str) -> None:
    config = load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert workers, "no worker node type"
    # as Ray's large-cluster guide sets it: no task or trial on the head
    assert head["resources"] == {"CPU": 0}
    for key, node in workers.items():
        assert node["resources"].get("GPU", 0) >= 1, f"{key} declares no GPU"
        assert node["resources"].get("CPU", 0) >= 1, f"{key} declares no CPU"
        assert 0 <= node["min_workers"] <= node["max_workers"] <= config["max_workers"]
        gpus, vcpus, _ = GPU_TYPES[instance_type(config, node)]
        assert node["resources"] == {"CPU": vcpus, "GPU": gpus}, key
        if config["provider"]["type"] == "gcp":
            assert node["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
    # rbm-tune counts the cluster's GPUs when a study starts (none: trials run on CPUs).
    assert sum(w["min_workers"] for w in workers.values()) >= 1


MIB = 2**20
# instance type -> (GPUs, vCPUs, memory of one GPU as nvidia-smi reports it)
GPU_TYPES = {
    "g5.2xlarge": (1, 8, 23028 * MIB),  # AWS, NVIDIA A10G
    "g6.2xlarge": (1, 8, 23034 * MIB),  # AWS, NVIDIA L4
    "g4dn.2xlarge": (1, 8, 15360 * MIB),  # AWS, NVIDIA T4
    "g2-standard-8": (1, 8, 23034 * MIB),  # GCP, NVIDIA L4 (part of the machine type)
    "n1-standard-8+nvidia-tesla-t4": (1, 8, 15360 * MIB),  # GCP, N1 with a T4 attached
}


def instance_type(config: dict, node: dict) -> str:
    node_config = node["node_config"]
    if config["provider"]["type"] == "aws":
        return node_config["InstanceType"]
    name = node_config["machineType"]
    for accelerator in node_config.get("guestAccelerators", []):
        name += f"+{accelerator['acceleratorType']}"
    return name


def misfits(card: int) -> list[str]:
    """Every shipped GPU space whose default trial does not fit its gpus_per_trial share of a
    card this size, or whose teacher does not fit the whole card (rbm_tune.memory's CUDA
    estimates from the datasets' published sizes)."""
    from rbm_tune.memory import GraphSizes, student_estimate, teacher_estimate, trial_share
    from rbm_tune.search_space import load_space

    out = []
    for path in sorted((REPO / "rbm_tune" / "search_spaces").glob("*.yaml")):
        space = load_space(path.stem)
        if space.study.gpus_per_trial <= 0:
            continue
        base = space.default_config()
        sizes = GraphSizes.for_dataset(base.dataset)
        trial = student_estimate(base, sizes, "cuda").total
        if trial > trial_share(space.study, "cuda", card_memory=card):
            out.append(f"{path.stem} trial")
        if teacher_estimate(base.teacher, sizes, "cuda").total > card:
            out.append(f"{path.stem} teacher")
    return out


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_gpu_workers_fit_every_shipped_space(name: str) -> None:
    config = load(name)
    workers = [
        node
        for key, node in config["available_node_types"].items()
        if key != config["head_node_type"]
    ]
    for node in workers:
        _, _, card = GPU_TYPES[instance_type(config, node)]
        assert misfits(card) == [], instance_type(config, node)


def test_the_fit_check_rejects_a_16_gb_t4() -> None:
    _, _, t4 = GPU_TYPES["n1-standard-8+nvidia-tesla-t4"]
    assert misfits(t4) == ["coauthor-physics trial"]


def test_setup_installs_the_cuda_build_of_the_pinned_torch() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"(torch==[0-9.]+)"', pyproject)
    for name in LAUNCHER_CONFIGS:
        setup = load(name)["setup_commands"]
        (torch_cmd,) = [c for c in setup if " torch==" in c]
        assert f" {pin} " in f"{torch_cmd} "
        assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu1\d\d+\b", torch_cmd)
        (project_cmd,) = [c for c in setup if c.rstrip().endswith("~/rbm-tune-src")]
        assert setup.index(torch_cmd) < setup.index(project_cmd)  # pip then keeps that torch
        (check,) = load(name)["worker_setup_commands"]
        assert "torch.cuda.is_available()" in check and "sys.exit" in check


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_setup_installs_rbm_tune_and_ray_starts_from_its_env(name: str) -> None:
    config = load(name)
    setup = "\n".join(config["setup_commands"])
    assert "rbm-tune" in setup and "pip install" in setup
    assert "/mnt/shared" in setup  # the shared results folder is mounted on every node
    assert config["file_mounts"], "no file mounts"
    head_start = config["head_start_ray_commands"]
    worker_start = config["worker_start_ray_commands"]
    (head_cmd,) = [c for c in head_start if "ray start" in c]
    (worker_cmd,) = [c for c in worker_start if "ray start" in c]
    assert "ray start --head" in head_cmd
    assert "--dashboard-host=127.0.0.1" in head_cmd  # reached through `ray dashboard` only
    assert "0.0.0.0" not in (CLUSTER / name).read_text()
    for cmd in (head_cmd, worker_cmd):
        # the env file (venv first on PATH) is sourced before `ray start`
        assert cmd.index(". ~/rbm-tune.env") < cmd.index("ray start")


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_the_env_file_puts_the_venv_first_and_points_at_shared_state(
    name: str, tmp_path: Path
) -> None:
    """Runs the setup command that writes ~/rbm-tune.env (into a temporary HOME), sources it."""
    (write,) = [c for c in load(name)["setup_commands"] if "> ~/rbm-tune.env" in c]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run(["bash", "-c", write], env=env, check=True)
    out = subprocess.run(
        ["bash", "-c", ". ~/rbm-tune.env && env"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert values["PATH"].split(":")[0] == f"{tmp_path}/rbm-tune-venv/bin"
    assert values["RAY_AUTH_MODE"] == "token"
    assert re.fullmatch(r"(s3|gs)://YOUR-BUCKET/rbm-tune-cache", values["RBM_TUNE_CACHE"])
    assert values["RBM_TUNE_STORAGE"].startswith("/mnt/shared/")
    assert values["MLFLOW_TRACKING_URI"] == "http://YOUR-MLFLOW-HOST:5000"


def test_gcp_project_is_a_placeholder() -> None:
    assert load("gcp.yaml")["provider"]["project_id"] == "YOUR-GCP-PROJECT-ID"


# -- KubeRay RayJob -----------------------------------------------------------------------------
#
# The `required:` lists of the RayJob CRD, ray-project/kuberay
# ray-operator/config/crd/bases/ray.io_rayjobs.yaml, version v1, openAPIV3Schema, as read at
# commit 007412988d067642eeb67f8b80c373fc9ab401dd, on the path to every field this manifest sets:
#   spec                                      required: [entrypoint]
#   spec.rayClusterSpec                       required: [headGroupSpec]
#   spec.rayClusterSpec.headGroupSpec         required: [rayStartParams, template]
#   spec.rayClusterSpec.workerGroupSpecs[]    required: [groupName, maxReplicas, minReplicas,
#                                                        rayStartParams, template]
#   <group>.template.spec                     required: [containers]   (the Pod spec)
#   containers[]: [name]; ports[]: [containerPort]; env[]: [name]; volumeMounts[]: [mountPath,
#   name]; volumes[]: [name]; persistentVolumeClaim: [claimName]
# plus the types the CRD gives (rayStartParams: map of strings; replicas: int32; quantities: int
# or string). Later KubeRay releases made entrypoint (InteractiveMode) and rayStartParams (1.4)
# optional; requiring them keeps the manifest valid for old and new operators. Added here, not
# from the CRD: metadata.name (the API server needs it) and template.spec (a pod template
# without a spec is useless).

QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
RESOURCES = {
    "type": "object",
    "properties": {
        "limits": {"type": "object", "additionalProperties": QUANTITY},
        "requests": {"type": "object", "additionalProperties": QUANTITY},
    },
}
CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "ports": {
            "type": "array",
            "items": {"type": "object", "required": ["containerPort"]},
        },
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "resources": RESOURCES,
        # core/v1 Container.lifecycle.preStop: a LifecycleHandler; exec.command is []string
        "lifecycle": {
            "type": "object",
            "properties": {
                "preStop": {
                    "type": "object",
                    "properties": {
                        "exec": {
                            "type": "object",
                            "properties": {
                                "command": {"type": "array", "items": {"type": "string"}}
                            },
                        }
                    },
                }
            },
        },
        "volumeMounts": {
            "type": "array",
            "items": {"type": "object", "required": ["mountPath", "name"]},
        },
    },
}
POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "volumes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "persistentVolumeClaim": {
                                "type": "object",
                                "required": ["claimName"],
                            }
                        },
                    },
                },
            },
        }
    },
}
START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
RAYJOB_REQUIRED = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
            },
        },
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "properties": {
                "entrypoint": {"type": "string"},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": INT32,
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "properties": {
                                "serviceType": {"type": "string"},
                                "rayStartParams": START_PARAMS,
                                "template": POD_TEMPLATE,
                            },
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "groupName",
                                    "maxReplicas",
                                    "minReplicas",
                                    "rayStartParams",
                                    "template",
                                ],
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": INT32,
                                    "minReplicas": INT32,
                                    "maxReplicas": INT32,
                                    "rayStartParams": START_PARAMS,
                                    "template": POD_TEMPLATE,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_rayjob_has_every_field_the_crd_requires() -> None:
    jsonschema.validate(load("kuberay-rayjob.yaml"), RAYJOB_REQUIRED)


def _drop_group_name(m: dict) -> None:
    del m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]


def _drop_head_start_params(m: dict) -> None:
    del m["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]


def _int_start_param(m: dict) -> None:
    m["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0


def _drop_containers(m: dict) -> None:
    del m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]


def _nameless_container(m: dict) -> None:
    del m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]


def _drop_entrypoint(m: dict) -> None:
    del m["spec"]["entrypoint"]


def _alpha_api(m: dict) -> None:
    m["apiVersion"] = "ray.io/v1alpha1"


def _string_prestop(m: dict) -> None:
    container = m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    container["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] = "ray stop"


@pytest.mark.parametrize(
    "breakage",
    [
        _string_prestop,
        _drop_group_name,
        _drop_head_start_params,
        _int_start_param,
        _drop_containers,
        _nameless_container,
        _drop_entrypoint,
        _alpha_api,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_the_crd_check_rejects_a_broken_copy(breakage: Any) -> None:
    manifest = load("kuberay-rayjob.yaml")
    breakage(manifest)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, RAYJOB_REQUIRED)


def test_rayjob_runs_rbm_tune_on_gpu_workers_with_shared_storage() -> None:
    manifest = load("kuberay-rayjob.yaml")
    spec = manifest["spec"]
    entry = spec["entrypoint"]
    assert entry.startswith("rbm-tune --space ")
    assert "--address auto" in entry
    assert "--storage-path /mnt/shared/" in entry
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # in-pod, behind ClusterIP
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 1 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        resources = container["resources"]
        gpus = int(resources["limits"]["nvidia.com/gpu"])
        assert gpus >= 1
        assert int(resources["requests"].get("nvidia.com/gpu", gpus)) == gpus
    for template in [head["template"]] + [g["template"] for g in groups]:
        pod = template["spec"]
        claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        for container in pod["containers"]:
            assert "YOUR-" in container["image"]
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert any(mounts.get(c) == "/mnt/shared" for c in claims)


def _containers(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


def check_prestop(manifest: dict) -> None:
    for container in _containers(manifest):
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["/bin/sh", "-c"] and command[2].strip() == "ray stop"


def test_every_ray_pod_stops_ray_before_it_goes() -> None:
    check_prestop(load("kuberay-rayjob.yaml"))


def test_the_prestop_check_fails_without_the_hook() -> None:
    manifest = load("kuberay-rayjob.yaml")
    del _containers(manifest)[-1]["lifecycle"]  # the GPU workers'
    with pytest.raises(KeyError):
        check_prestop(manifest)


GIB = 2**30


def _quantity(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": GIB, "Ti": 2**40, "G": 10**9, "M": 10**6}
    for suffix, factor in units.items():
        if str(text).endswith(suffix):
            return int(float(str(text)[: -len(suffix)]) * factor)
    return int(text)


def head_memory_budget() -> dict[str, int]:
    """The head's budget as the manifest's comment explains it, from the largest shipped
    dataset's published sizes (ogbn-products) and its space's teacher."""
    from rbm_tune.memory import DATASET_SIZES
    from rbm_tune.search_space import load_space

    sizes = DATASET_SIZES["ogbn-products"]
    hidden = load_space("products").default_config().teacher.hidden_dim
    graph = sizes.num_nodes * sizes.num_features * 4 + sizes.num_edges * 2 * 8
    teacher = sizes.num_nodes * (sizes.num_classes + hidden) * 4
    return {
        "object_store": graph + (graph + teacher),  # the teacher task's graph + a full payload
        "driver": 2 * graph + teacher + GIB,  # + one copy while loading + the imports
        "ray": 4 * GIB,
    }


def check_head_memory(manifest: dict) -> None:
    head = manifest["spec"]["rayClusterSpec"]["headGroupSpec"]
    (container,) = head["template"]["spec"]["containers"]
    limit = _quantity(container["resources"]["limits"]["memory"])
    assert _quantity(container["resources"]["requests"]["memory"]) == limit
    store = int(head["rayStartParams"]["object-store-memory"])
    need = head_memory_budget()
    assert store >= need["object_store"], (store / GIB, need["object_store"] / GIB)
    assert limit - store >= need["driver"] + need["ray"], ((limit - store) / GIB, need)


def test_head_memory_holds_the_driver_and_the_object_store() -> None:
    need = head_memory_budget()
    # the figures the manifest's comment gives
    assert 7 * GIB < need["object_store"] < 8 * GIB
    assert 8 * GIB < need["driver"] < 9 * GIB
    check_head_memory(load("kuberay-rayjob.yaml"))


@pytest.mark.parametrize(("memory", "store"), [("16Gi", "10737418240"), ("32Gi", "4294967296")])
def test_the_head_memory_check_rejects_a_small_head(memory: str, store: str) -> None:
    manifest = load("kuberay-rayjob.yaml")
    head = manifest["spec"]["rayClusterSpec"]["headGroupSpec"]
    resources = head["template"]["spec"]["containers"][0]["resources"]
    resources["limits"]["memory"] = resources["requests"]["memory"] = memory
    head["rayStartParams"]["object-store-memory"] = store
    with pytest.raises(AssertionError):
        check_head_memory(manifest)


# -- SLURM --------------------------------------------------------------------------------------


def test_sbatch_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)


def test_sbatch_starts_ray_and_the_study() -> None:
    text = SBATCH.read_text()
    assert "set -euo pipefail" in text
    assert 'exec ray start "$@" --num-cpus="$cpus" --num-gpus="$gpus"' in text
    assert 'start_ray_step "$head_node" --head --block' in text
    assert "rbm-tune --space" in text
    assert "scontrol show hostnames" in text
    for directive in ("--nodes", "--gpus-per-node", "--cpus-per-task", "--time"):
        assert re.search(rf"^#SBATCH {directive}=", text, re.M), directive


SHIMS = {
    # bin/: the SLURM tools, and what a node's step sees (nproc, nvidia-smi)
    "bin/scontrol": """\
        [[ "$1 $2" == "show hostnames" ]] || exit 1
        printf 'node-1\\nnode-2\\nnode-3\\n'
        """,
    # a step gets --cpus-per-task CPUs (1 without it: srun no longer inherits the job's) and the
    # node's GPUs: SHIM_GPUS_<node> (default SHIM_GPUS, else 0), as nvidia-smi -L lists them
    "bin/srun": """\
        node= cpus=1
        while (($#)); do
            case $1 in
                -w|--nodelist) node=$2; shift 2 ;;
                --nodelist=*) node=${1#*=}; shift ;;
                -c) cpus=$2; shift 2 ;;
                --cpus-per-task=*) cpus=${1#*=}; shift ;;
                -*) shift ;;
                *) break ;;
            esac
        done
        args="$*"
        echo "srun[$node] cpus=$cpus ${args//$'\\n'/ }" >> "$SHIM_LOG"
        var="SHIM_GPUS_${node//-/_}"
        export SHIM_STEP_CPUS=$cpus SHIM_STEP_GPUS=${!var:-${SHIM_GPUS:-0}}
        exec "$@"
        """,
    "bin/nproc": 'echo "${SHIM_STEP_CPUS:-64}"\n',
    "bin/nvidia-smi": """\
        [[ "$1" == "-L" ]] || exit 1
        for ((i = 0; i < ${SHIM_STEP_GPUS:-0}; i++)); do echo "GPU $i: A100 (UUID: x-$i)"; done
        """,
    "bin/hostname": "echo '10.11.12.13 fe80::1'\n",
    # venv/bin/: what the script finds on PATH once it puts the venv first
    "venv/bin/ray": """\
        # a worker takes a moment to join the head
        if [[ " $* " == *" --address="* ]]; then sleep 0.5; fi
        echo "ray $*" >> "$SHIM_LOG"
        if [[ " $* " == *" --block "* ]]; then
            echo $$ >> "$SHIM_PIDS"
            exec sleep 300
        fi
        """,
    # the script's probe: alive Ray nodes (the `ray start --block` calls so far) and their GPUs
    "venv/bin/python": """\
        cat > /dev/null
        n=$(grep -c -- '^ray start.*--block' "$SHIM_LOG" || true)
        max=${SHIM_MAX_NODES:-99}
        g=$(grep -o -- '^ray start.*--num-gpus=[0-9]*' "$SHIM_LOG" | sed 's/.*=//' | paste -sd+)
        echo $((n < max ? n : max)) $((${g:-0}))
        """,
    "venv/bin/rbm-tune": """\
        n=$(grep -c -- '^ray start.*--block' "$SHIM_LOG" || true)
        echo "rbm-tune[$n nodes up] $*" >> "$SHIM_LOG"
        echo "study env: RBM_TUNE_GPU_WAIT_S=${RBM_TUNE_GPU_WAIT_S:-unset}" >> "$SHIM_LOG"
        if [[ -n "${SHIM_STUDY_HANGS:-}" ]]; then
            echo $$ >> "$SHIM_PIDS"
            exec sleep 300
        fi
        exit "${SHIM_STUDY_RC:-0}"
        """,
}


def _run_sbatch(
    tmp_path: Path, *args: str, cancel: bool = False, **extra_env: str
) -> subprocess.CompletedProcess:
    """Runs cluster/slurm.sbatch with the stand-ins; `cancel`: SIGTERM it (as scancel or the
    time limit do) once the study has started."""
    for name, body in SHIMS.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [line.removeprefix("        ") for line in body.splitlines()]
        path.write_text("#!/bin/bash\n" + "\n".join(lines) + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "home").mkdir(parents=True)
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "SHIM_LOG": str(tmp_path / "log"),
        "SHIM_PIDS": str(tmp_path / "pids"),
        "SLURM_JOB_NODELIST": "node-[1-3]",
        "SLURM_JOB_NUM_NODES": "3",
        "SLURM_CPUS_PER_TASK": "8",
        "SLURM_GPUS_ON_NODE": "2",  # SLURM_GPUS_PER_NODE is left unset, as with --gres=gpu:2
        "SHIM_GPUS": "2",
        "SPACE": "demo",
        "RBM_TUNE_VENV": str(tmp_path / "venv"),
        "RBM_TUNE_STORAGE": str(tmp_path / "runs"),
        "RAY_WAIT_S": "20",
        "RAY_POLL_S": "0.1",
        **extra_env,
    }
    (tmp_path / "log").touch()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    try:
        # Files, not pipes: a step the script forgot to stop must not keep run() waiting.
        with out.open("w") as stdout, err.open("w") as stderr:
            script = subprocess.Popen(
                ["bash", str(SBATCH), *args], env=env, stdout=stdout, stderr=stderr
            )
            try:
                deadline = time.monotonic() + 30
                while cancel and script.poll() is None and time.monotonic() < deadline:
                    if "rbm-tune[" in (tmp_path / "log").read_text():
                        script.send_signal(signal.SIGTERM)
                        break
                    time.sleep(0.05)
                code = script.wait(timeout=60)
            finally:
                if script.poll() is None:
                    script.kill()
                    script.wait()
        return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())
    finally:
        # every stand-in `ray start --block` (and a hanging study) must be stopped by the script
        pids_file = tmp_path / "pids"
        left = []
        for pid in map(int, pids_file.read_text().split() if pids_file.exists() else []):
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                left.append(pid)
        assert not left, f"the script left processes running: {left}"


def _log(tmp_path: Path) -> list[str]:
    """What the stand-ins recorded, one command a line."""
    return (tmp_path / "log").read_text().splitlines()


def test_sbatch_end_to_end_with_stand_ins(tmp_path: Path) -> None:
    result = _run_sbatch(tmp_path, "--trials", "2", "--name", "demo-slurm")
    assert result.returncode == 0, result.stderr
    log = _log(tmp_path)
    head = "10.11.12.13:6379"
    starts = [line for line in log if line.startswith("srun[") and " ray start " in line]
    assert len(starts) == 3
    assert starts[0].startswith("srun[node-1] cpus=8 bash -c ")
    assert " rbm-tune-ray-step --head --block " in starts[0]
    assert "--node-ip-address=10.11.12.13" in starts[0]
    assert "--dashboard-host=127.0.0.1" in starts[0]
    assert {s.split("]")[0] for s in starts[1:]} == {"srun[node-2", "srun[node-3"}
    for line in starts:
        assert " cpus=8 " in line  # --cpus-per-task passed to every step explicitly
    # what each node's Ray was given: the step's CPUs (nproc) and the node's GPUs (nvidia-smi)
    rays = [line for line in log if line.startswith("ray start ")]
    assert len(rays) == 3
    for line in rays:
        assert line.endswith("--num-cpus=8 --num-gpus=2"), line
    for line in rays[1:]:
        assert f"--address={head} --block" in line
    (study,) = [line for line in log if line.startswith("rbm-tune")]
    # started only once all three nodes had joined
    assert study.startswith(f"rbm-tune[3 nodes up] --space demo --address {head} ")
    assert f"--storage-path {tmp_path / 'runs'}" in study
    assert f"--tracking-uri sqlite:///{tmp_path / 'runs'}/mlflow.db" in study
    assert study.endswith("--trials 2 --name demo-slurm")
    assert "ray get-auth-token --generate" in log
    # a GPU space on GPU-less nodes: the study's own wait is bounded by the script's RAY_WAIT_S
    assert "study env: RBM_TUNE_GPU_WAIT_S=20" in log


def test_sbatch_gives_up_when_a_node_does_not_join(tmp_path: Path) -> None:
    result = _run_sbatch(tmp_path, SHIM_MAX_NODES="2", RAY_WAIT_S="2")
    assert result.returncode != 0
    assert re.search(r"only [0-2] of 3 Ray nodes joined within 2s", result.stderr)
    assert not [line for line in _log(tmp_path) if line.startswith("rbm-tune")]


def test_sbatch_srun_steps_do_not_rely_on_inherited_cpus() -> None:
    text = SBATCH.read_text()
    assert 'export SRUN_CPUS_PER_TASK="$cpus"' in text
    assert "SLURM_GPUS_PER_NODE:-" not in text and "${SLURM_GPUS_PER_NODE" not in text
    for match in re.finditer(r"^\s*srun (.*)$", text, re.M):
        if "ray" in match.group(1) or "STEP_RAY" in match.group(1):
            assert '--cpus-per-task="$cpus"' in match.group(1)


def test_sbatch_counts_each_nodes_own_gpus(tmp_path: Path) -> None:
    """GPUs from the node (nvidia-smi) and CPUs from the step, per node: node-3 has 4 GPUs."""
    result = _run_sbatch(tmp_path, SHIM_GPUS_node_3="4", SLURM_CPUS_PER_TASK="6")
    assert result.returncode == 0, result.stderr
    rays = [line for line in _log(tmp_path) if line.startswith("ray start ")]
    gpus = sorted(int(line.rsplit("--num-gpus=", 1)[1]) for line in rays)
    assert gpus == [2, 2, 4]
    assert all("--num-cpus=6 " in line for line in rays)
    assert result.stderr.count("Ray gets 6 CPUs and 2 GPUs") == 2
    assert result.stderr.count("Ray gets 6 CPUs and 4 GPUs") == 1


def test_sbatch_takes_gpus_from_cuda_visible_devices_in_the_step(tmp_path: Path) -> None:
    result = _run_sbatch(tmp_path, CUDA_VISIBLE_DEVICES="0,1", SHIM_GPUS="8")
    assert result.returncode == 0, result.stderr
    rays = [line for line in _log(tmp_path) if line.startswith("ray start ")]
    assert rays and all(line.endswith("--num-gpus=2") for line in rays)


def test_sbatch_fails_in_one_line_when_the_gpus_never_appear(tmp_path: Path) -> None:
    """SLURM gave 2 GPUs a node, but node-2's driver shows none: one line after RAY_WAIT_S,
    exit 2, no study, and every Ray step stopped (_run_sbatch checks that)."""
    started = time.monotonic()
    result = _run_sbatch(tmp_path, SHIM_GPUS_node_2="0", RAY_WAIT_S="2")
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "GPUs this job asked for" in line]
    assert lines == [
        "rbm-tune-slurm: Ray sees 4 of the 6 GPUs this job asked for after 2s (2 per node); "
        "check nvidia-smi on the nodes, or set RBM_TUNE_GPUS_PER_NODE to what they have"
    ]
    assert not [line for line in _log(tmp_path) if line.startswith("rbm-tune")]


def test_sbatch_gpu_wait_follows_rbm_tune_gpus_per_node(tmp_path: Path) -> None:
    # a CPU-only allocation expects no GPU; an override asks for more than the nodes have
    ok = _run_sbatch(tmp_path / "a", SLURM_GPUS_ON_NODE="", SHIM_GPUS="0")
    assert ok.returncode == 0, ok.stderr
    short = _run_sbatch(tmp_path / "b", RBM_TUNE_GPUS_PER_NODE="4", RAY_WAIT_S="3")
    assert short.returncode == 2
    assert "Ray sees 6 of the 12 GPUs" in short.stderr
    bad = _run_sbatch(tmp_path / "c", RBM_TUNE_GPUS_PER_NODE="two")
    assert bad.returncode == 2 and "not a whole number" in bad.stderr


def test_sbatch_passes_on_a_failed_study_and_still_stops_ray(tmp_path: Path) -> None:
    result = _run_sbatch(tmp_path, SHIM_STUDY_RC="3")
    assert result.returncode == 3
    assert [line for line in _log(tmp_path) if line.startswith("rbm-tune")]


def test_sbatch_cancelled_stops_the_study_and_ray(tmp_path: Path) -> None:
    result = _run_sbatch(tmp_path, cancel=True, SHIM_STUDY_HANGS="1")
    assert result.returncode == 143  # 128 + SIGTERM
    assert [line for line in _log(tmp_path) if line.startswith("rbm-tune")]


def test_sbatch_needs_a_space(tmp_path: Path) -> None:
    result = _run_sbatch(tmp_path, SPACE="")
    assert result.returncode != 0
    assert "SPACE" in result.stderr
    assert "ray start" not in (tmp_path / "log").read_text()

"""Two single-process "nodes" here (torchrun, c10d rendezvous on 127.0.0.1) equal one node with two processes.

Training with re-weighting on every step gives the same final adapter, and `vdtrain filter score` the same scores file:
the noise is seeded from each sample's global position and the data sharded by global rank, so where the ranks run
does not matter (`slow`: each test starts four launchers). Also: `recipes/slurm/train.sbatch` keeps the global batch.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import REPO, _config, _free_port, _launch, _logs, _torchrun, data_dir  # noqa: F401

TIMEOUT = 600
SBATCH = REPO / "recipes" / "slurm" / "train.sbatch"


def _node_launchers(nodes: int = 2) -> list[list[str]]:
    """One torchrun command per node: `--nnodes N --nproc-per-node 1`, c10d rendezvous hosted by node 0."""
    endpoint, job = f"127.0.0.1:{_free_port()}", f"vdtrain-test-{os.getpid()}-{time.monotonic_ns()}"
    return [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={nodes}",
            "--nproc-per-node=1",
            f"--node-rank={rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={job}",
            f"--rdzv-conf=is_host={str(rank == 0).lower()},join_timeout=300",
            "--local-addr=127.0.0.1",
        ]
        for rank in range(nodes)
    ]


def _on_nodes(run_one, launchers: list[list[str]]) -> list:
    """`run_one(launcher, node)` for every node at once (they rendezvous with each other); their results in order."""
    with ThreadPoolExecutor(len(launchers)) as pool:
        futures = [pool.submit(run_one, launcher, node) for node, launcher in enumerate(launchers)]
        return [future.result() for future in futures]


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


SAME = dict(use_cpu=True, vd_weighting="neg", vd_temperature=1.0, per_device_train_batch_size=2)


@pytest.fixture(scope="module")
def one_node(tiny_llava_dir: Path, data_dir: Path) -> Path:  # noqa: F811
    """One node, two processes, batch 2 each, re-weighting on every step: the reference run."""
    return _launch(_torchrun(2), _config(tiny_llava_dir, data_dir, "one-node", **SAME), data_dir, timeout=TIMEOUT)


def _assert_same_training(one: Path, two: Path) -> None:
    logs_one, logs_two = _logs(one), _logs(two)
    assert [entry["step"] for entry in logs_two] == [entry["step"] for entry in logs_one] == [1, 2, 3, 4]
    for a, b in zip(logs_one, logs_two):
        assert a["loss"] == b["loss"] and a["vd_weight_max"] == b["vd_weight_max"] > 1.0  # re-weighting was active
    weights_one, weights_two = (load_file(d / "adapter_model.safetensors") for d in (one, two))
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        assert torch.equal(weights_one[name], weights_two[name]), name
    assert any("lora_B" in name and weights_one[name].abs().sum() > 0 for name in weights_one)  # it trained


@pytest.mark.slow
def test_two_nodes_train_like_one_node_with_two_processes(tiny_llava_dir: Path, data_dir: Path, one_node: Path):  # noqa: F811
    config = _config(tiny_llava_dir, data_dir, "two-nodes", **SAME)

    def node(launcher: list[str], rank: int) -> Path:
        folder = data_dir / f"node{rank}"  # each node its own recipe file; the output directory is shared
        folder.mkdir(exist_ok=True)
        return _launch(launcher, config, folder, timeout=TIMEOUT)

    _assert_same_training(one_node, _on_nodes(node, _node_launchers())[0])


SRUN = """#!/bin/bash
# srun stand-in for a 1-machine test: the command once per node of the job, at once, each with its SLURM_NODEID
while [[ "$1" == --* ]]; do shift; done
pids=()
for node in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$node "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
CPU_ACCELERATE = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
mixed_precision: 'no'
machine_rank: 0
num_machines: 1
num_processes: 1
rdzv_backend: static
same_network: true
use_cpu: false
"""


@pytest.mark.slow
def test_sbatch_script_launches_two_nodes(tiny_llava_dir: Path, data_dir: Path, one_node: Path, tmp_path: Path):  # noqa: F811
    # The script itself, with `srun` replaced by a loop over the nodes and 1 "GPU" (a CPU process) per node: its
    # accelerate command lines start a 2-node run that equals the one-node reference (global batch 4 = 2 x 2 x 1).
    import yaml

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text(SRUN)
    (tmp_path / "bin" / "srun").chmod(0o755)
    (tmp_path / "accelerate.yaml").write_text(CPU_ACCELERATE)
    config = _config(tiny_llava_dir, data_dir, "sbatch", **SAME)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    path = os.pathsep.join([str(tmp_path / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {
        **_env(),
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "7",
        "GPUS_PER_NODE": "1",
        "GLOBAL_BATCH": "4",
        "MAIN_ADDR": "127.0.0.1",
        "MAIN_PORT": str(_free_port()),
        "PATH": path,
        "ACCELERATE_CONFIG": str(tmp_path / "accelerate.yaml"),
    }
    run = subprocess.run(
        ["bash", str(SBATCH), str(tmp_path / "recipe.yaml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "2 nodes x 1 GPUs, global batch 4 = 2 per device x 2 processes x 1 accumulation" in run.stdout
    _assert_same_training(one_node, Path(config["output_dir"]))


@pytest.mark.slow
def test_two_nodes_score_like_one_node_with_two_processes(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path):  # noqa: F811
    def score(launcher: list[str], out: Path) -> None:
        command = [
            *launcher,
            "-m",
            "vdtrain",
            "filter",
            "score",
            "--model",
            str(tiny_llava_dir),
            "--data",
            str(data_dir / "data.json"),
            "--image-folder",
            str(data_dir / "images"),
            "--output-dir",
            str(out),
            "--batch-size",
            "2",
            "--no-progress",
        ]
        run = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    score(_torchrun(2), tmp_path / "one-node")
    _on_nodes(lambda launcher, rank: score(launcher, tmp_path / "two-nodes"), _node_launchers())
    one, two = (tmp_path / name / "scores.jsonl" for name in ("one-node", "two-nodes"))
    rows = [json.loads(line) for line in one.read_text().splitlines()]
    assert [row["index"] for row in rows] == list(range(8)) and all(row["n_tokens"] > 0 for row in rows)
    assert len({round(row["score"], 6) for row in rows}) > 1  # real, differing scores
    assert two.read_bytes() == one.read_bytes()
    assert (
        json.loads((tmp_path / "two-nodes" / "summary.json").read_text())["counts"]
        == json.loads((tmp_path / "one-node" / "summary.json").read_text())["counts"]
    )


def _sbatch_dry_run(nodes: int, recipe: str, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    env = {**_env(), "SLURM_NNODES": str(nodes), "SLURM_JOB_ID": "4242", "MAIN_ADDR": "node-a", "DRY_RUN": "1", **env}
    return subprocess.run(["bash", str(SBATCH), recipe, *overrides], cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(("nodes", "per_device", "accumulation"), [(1, None, 2), (2, None, 1), (4, "8", 1)])
def test_sbatch_keeps_the_recipe_global_batch(nodes, per_device, accumulation):
    from vdtrain.commands.train import load_config, parse_overrides

    recipe = "recipes/llava-1.5-7b/detail23k-vd-neg.yaml"
    run = _sbatch_dry_run(
        nodes, recipe, "--vd_temperature", "1.0", **({"PER_DEVICE": per_device} if per_device else {})
    )
    assert run.returncode == 0, run.stderr
    commands = [shlex.split(line) for line in run.stdout.splitlines() if line.startswith("accelerate launch")]
    assert len(commands) == nodes
    for rank, argv in enumerate(commands):
        launch = argv[2 : argv.index("-m")]  # --flag value pairs
        flags = dict(zip(launch[::2], launch[1::2]))
        assert flags["--machine_rank"] == str(rank) and flags["--num_machines"] == str(nodes)
        assert flags["--num_processes"] == str(4 * nodes) and flags["--main_process_ip"] == "node-a"
        assert (
            flags["--main_process_port"] == str(20000 + 4242) and flags["--deepspeed_multinode_launcher"] == "standard"
        )
        assert argv[argv.index("-m") : argv.index("-m") + 4] == ["-m", "vdtrain", "train", recipe]
        # what `vdtrain train` makes of the node's arguments: 128, the override kept (use_cpu: for bf16 here)
        _, _, args = load_config(REPO / recipe, {**parse_overrides(argv[argv.index("-m") + 4 :]), "use_cpu": True})
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 4 * nodes == 128
        assert args.gradient_accumulation_steps == accumulation and args.vd_temperature == 1.0


def test_sbatch_refuses_a_global_batch_it_cannot_keep():
    run = _sbatch_dry_run(3, "recipes/llava-1.5-7b/detail23k-vd-neg.yaml")  # 128 / (16 x 12) is not whole
    assert run.returncode == 2 and "global batch 128 is not a multiple" in run.stderr and not run.stdout.strip()

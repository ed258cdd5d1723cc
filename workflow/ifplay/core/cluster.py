"""What each job asks of a cluster: threads and SLURM resources per rule group, from the config.

Rules belong to four groups (declared per stage kind in :mod:`ifplay.core.stages`) (the same groups as the conda environments in ``envs/``):
``generation`` (models that generate or judge), ``training`` (trl), ``evaluation`` (the IFEval
checkers) and ``bookkeeping`` (files and tables). ``resources.<group>`` in the config says what a
job of that group asks for; ``resources.slurm`` says where jobs go (partition, account, ...).
The Snakefile passes :func:`rule_resources` to every rule, so a paper config asks for the GPUs
that vLLM's tensor parallelism and DeepSpeed training need and the CPU default asks for none.

Training jobs start through :func:`launch_command` (``ifplay launch``): one process where the job
has at most one GPU, ``accelerate launch`` with DeepSpeed ZeRO-3 (``config/accelerate/``) over
the job's GPUs, and, for several nodes, one ``accelerate launch`` per node started by ``srun``.

The keys are the names Snakemake's SLURM executor reads (``mem_mb``, ``runtime`` in minutes,
``gpu``, ``nodes``, ``slurm_partition``, ``slurm_account``, ``constraint``, ``qos``,
``gpu_model``); a job's threads become its ``--cpus-per-task``. Locally (``--cores``) only
``threads`` and ``mem_mb`` matter. None of these keys is part of a stage key: where a job runs
does not change what it computes.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ifplay.core.stages import GROUPS, STAGES  # noqa: F401 - GROUPS re-exported

#: The rule group of every rule: each stage kind's declared group, and the experiment report's.
RULE_GROUPS = {**{name: kind.group for name, kind in STAGES.items()}, "report": "bookkeeping"}

_PLACEMENT = {"partition": "slurm_partition", "account": "slurm_account", "constraint": "constraint",
              "qos": "qos"}


def rule_threads(config: dict, group: str) -> int:
    """Threads (and SLURM ``--cpus-per-task``) of a job of ``group``."""
    return int(_group(config, group)["cpus"])


def rule_resources(config: dict, group: str) -> dict:
    """Snakemake resources of a job of ``group``: memory, runtime, GPUs and nodes, plus the SLURM
    placement; placement keys whose value is null are left out (the cluster's defaults apply)."""
    settings = _group(config, group)
    # gpu and nodes are always set (training jobs pass them to `ifplay launch`); gpu=0 asks for none
    resources = {"mem_mb": settings["mem_mb"], "runtime": settings["runtime"], "gpu": settings["gpus"],
                 "nodes": settings["nodes"]}
    if settings["gpus"] and config["resources"]["slurm"]["gpu_model"]:
        resources["gpu_model"] = config["resources"]["slurm"]["gpu_model"]
    for key, resource in _PLACEMENT.items():
        value = config["resources"]["slurm"][key]
        if value:
            resources[resource] = value
    return resources


def _group(config: dict, group: str) -> dict:
    if group not in GROUPS:
        raise ValueError(f"unknown rule group '{group}' (choices: {', '.join(GROUPS)})")
    return config["resources"][group]


MAIN_PROCESS_PORT = 29500


#: The repository's accelerate config for multi-GPU training (edit it, or pass another, to change
#: the DeepSpeed settings of a site).
ACCELERATE_CONFIG = Path(__file__).resolve().parents[3] / "config" / "accelerate" / "deepspeed_zero3.yaml"


def launch_command(args: list[str], gpus: int = 0, nodes: int = 1,
                   accelerate_config: str | os.PathLike = ACCELERATE_CONFIG) -> list[str]:
    """The command that runs ``ifplay ARGS`` (a training subcommand) on a job's GPUs.

    - ``gpus <= 1`` on one node: ``ifplay ARGS`` itself (CPU, or one GPU).
    - ``gpus > 1`` on one node: ``accelerate launch`` with ``gpus`` processes.
    - ``nodes > 1``: ``srun`` starts one ``accelerate launch`` per node (``nodes * gpus`` processes
      in all); the first node of the allocation is the rendezvous host, each node's rank is
      ``$SLURM_NODEID``.
    """
    if gpus < 0 or nodes < 1:
        raise ValueError(f"gpus must be >= 0 and nodes >= 1, got gpus={gpus}, nodes={nodes}")
    if nodes == 1 and gpus <= 1:
        return ["ifplay", *args]
    per_node = max(gpus, 1)
    accelerate = ["accelerate", "launch", "--config_file", str(accelerate_config),
                  "--num_processes", str(per_node * nodes), "--num_machines", str(nodes)]
    if nodes == 1:
        return [*accelerate, "-m", "ifplay.cli", *args]
    # per node: rank and rendezvous host come from SLURM's environment, expanded on that node
    script = (shlex.join(accelerate) + " --machine_rank \"$SLURM_NODEID\""
              + " --main_process_ip \"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\""
              + f" --main_process_port {MAIN_PROCESS_PORT} -m ifplay.cli " + shlex.join(args))
    return ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "bash", "-c", script]


def _cmd_launch(args) -> None:
    command = launch_command(args.command, args.gpus, args.nodes, args.accelerate_config)
    beside = Path(sys.executable).parent / command[0]  # this environment's ifplay / accelerate first
    if beside.is_file():
        command[0] = str(beside)
    print("launch: " + shlex.join(command), file=sys.stderr, flush=True)
    os.execvp(command[0], command)


def add_cli(sub) -> None:
    """Register ``launch`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("launch", help="run a training subcommand on the job's GPUs (accelerate/DeepSpeed, srun)")
    p.add_argument("--gpus", type=int, required=True, help="GPUs per node of this job (resources.<group>.gpus)")
    p.add_argument("--nodes", type=int, required=True, help="nodes of this job (resources.<group>.nodes)")
    p.add_argument("--accelerate-config", default=str(ACCELERATE_CONFIG),
                   help="accelerate config for more than one GPU (default: the repository's DeepSpeed ZeRO-3)")
    p.add_argument("command", nargs="+", help="the ifplay subcommand and its arguments (after --)")
    p.set_defaults(func=_cmd_launch)

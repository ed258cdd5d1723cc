"""What each job asks of a cluster: threads and SLURM resources per rule group, from the config.

Rules belong to four groups (the same groups as the conda environments in ``envs/``):
``generation`` (models that generate or judge), ``training`` (trl), ``evaluation`` (the IFEval
checkers) and ``bookkeeping`` (files and tables). ``resources.<group>`` in the config says what a
job of that group asks for; ``resources.slurm`` says where jobs go (partition, account, ...).
The Snakefile passes :func:`rule_resources` to every rule, so a paper config asks for the GPUs
that vLLM's tensor parallelism and DeepSpeed training need and the CPU default asks for none.

The keys are the names Snakemake's SLURM executor reads (``mem_mb``, ``runtime`` in minutes,
``gpu``, ``nodes``, ``slurm_partition``, ``slurm_account``, ``constraint``, ``qos``,
``gpu_model``); a job's threads become its ``--cpus-per-task``. Locally (``--cores``) only
``threads`` and ``mem_mb`` matter. None of these keys is part of a stage key: where a job runs
does not change what it computes.
"""

from __future__ import annotations

GROUPS = ("generation", "training", "evaluation", "bookkeeping")

#: The rule group of every rule (tests check that each rule of the Snakefile is listed).
RULE_GROUPS = {
    "base_model": "generation",
    "eval_responses": "generation",
    "spar_samples": "generation",
    "spar_judged": "generation",
    "spar_trees": "generation",
    "judge_eval": "generation",
    "sft_model": "training",
    "actor_dpo": "training",
    "refiner_rft": "training",
    "ifeval_scores": "evaluation",
    "prompts": "bookkeeping",
    "spar_data": "bookkeeping",
    "experiment_report": "bookkeeping",
}

_PLACEMENT = {"partition": "slurm_partition", "account": "slurm_account", "constraint": "constraint",
              "qos": "qos"}


def rule_threads(config: dict, group: str) -> int:
    """Threads (and SLURM ``--cpus-per-task``) of a job of ``group``."""
    return int(_group(config, group)["cpus"])


def rule_resources(config: dict, group: str) -> dict:
    """Snakemake resources of a job of ``group``: memory, runtime, GPUs and nodes, plus the SLURM
    placement; keys whose value is null are left out (the cluster's defaults apply)."""
    settings = _group(config, group)
    resources = {"mem_mb": settings["mem_mb"], "runtime": settings["runtime"]}
    if settings["gpus"]:
        resources["gpu"] = settings["gpus"]
        if config["resources"]["slurm"]["gpu_model"]:
            resources["gpu_model"] = config["resources"]["slurm"]["gpu_model"]
    if settings["nodes"] > 1:
        resources["nodes"] = settings["nodes"]
    for key, resource in _PLACEMENT.items():
        value = config["resources"]["slurm"][key]
        if value:
            resources[resource] = value
    return resources


def _group(config: dict, group: str) -> dict:
    if group not in GROUPS:
        raise ValueError(f"unknown rule group '{group}' (choices: {', '.join(GROUPS)})")
    return config["resources"][group]

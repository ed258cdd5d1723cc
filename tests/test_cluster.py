"""Cluster resources per rule group: from the config to every rule, and to SLURM's flags."""

import re

from conftest import REPO, run
from ifplay.cluster import GROUPS, RULE_GROUPS, rule_resources, rule_threads
from ifplay.config import load_config

PAPER = REPO / "config" / "paper" / "spar-llama3-8b.yaml"


def test_default_asks_for_no_gpus_and_no_placement():
    config = load_config()
    for group in GROUPS:
        resources = rule_resources(config, group)
        assert "gpu" not in resources and "nodes" not in resources and "slurm_partition" not in resources
        assert resources["mem_mb"] > 0 and resources["runtime"] > 0
    assert rule_threads(config, "generation") == 2


def test_paper_config_asks_for_gpus_and_placement():
    config = load_config([PAPER], {"resources": {"slurm": {"partition": "gpu", "account": "lab",
                                                             "gpu_model": "a100"},
                                                  "training": {"nodes": 2}}})
    training = rule_resources(config, "training")
    assert training["gpu"] == 8 and training["nodes"] == 2 and training["gpu_model"] == "a100"
    assert training["slurm_partition"] == "gpu" and training["slurm_account"] == "lab"
    assert rule_resources(config, "generation")["gpu"] == 1
    assert "gpu" not in rule_resources(config, "bookkeeping")
    assert rule_threads(config, "training") == 32


def test_every_rule_takes_its_groups_threads_and_resources():
    seen = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for name, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^rule |\Z)", text):
            if name == "all":
                continue
            group = RULE_GROUPS[name]
            assert f'threads: THREADS["{group}"]' in body, name
            assert f'**RESOURCES["{group}"]' in body, name
            assert f"envs/{group}.yaml" in body, name  # the conda env of the same group
            seen[name] = group
    assert set(seen) == set(RULE_GROUPS)


def test_dry_run_of_the_paper_config_through_the_profile_lists_gpu_requests():
    out = run(["snakemake", "--profile", "slurm", "-n", "--configfile", str(PAPER)], cwd=REPO).stdout
    gpu_jobs = re.findall(r"(?ms)^rule (\w+):.*?resources: ([^\n]*)", out)
    requests = {rule: resources for rule, resources in gpu_jobs}
    assert "gpu=8" in requests["actor_dpo"] and "gpu=1" in requests["spar_samples"]
    assert "gpu" not in requests["spar_data"]

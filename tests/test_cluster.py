"""Cluster resources per rule group: from the config to every rule, and to SLURM's flags."""

import re
import shlex
import subprocess

import pytest
import yaml

from conftest import REPO, run
from ifplay.core.stages import STAGES
from ifplay.core.cluster import (ACCELERATE_CONFIG, GROUPS, MAIN_PROCESS_PORT, RULE_GROUPS, launch_command,
                            rule_resources, rule_threads)
from ifplay.core.config import load_config

PAPER = REPO / "config" / "paper" / "spar-llama3-8b.yaml"


def test_default_asks_for_no_gpus_and_no_placement():
    config = load_config()
    for group in GROUPS:
        resources = rule_resources(config, group)
        assert resources["gpu"] == 0 and resources["nodes"] == 1 and "slurm_partition" not in resources
        assert resources["mem_mb"] > 0 and resources["runtime"] > 0
    assert rule_threads(config, "generation") == 2 and rule_threads(config, "training") == 2


def test_paper_config_asks_for_gpus_and_placement():
    config = load_config([PAPER], {"resources": {"slurm": {"partition": "gpu", "account": "lab",
                                                             "gpu_model": "a100"},
                                                  "training": {"nodes": 2}}})
    training = rule_resources(config, "training")
    assert training["gpu"] == 8 and training["nodes"] == 2 and training["gpu_model"] == "a100"
    assert training["slurm_partition"] == "gpu" and training["slurm_account"] == "lab"
    assert rule_resources(config, "generation")["gpu"] == 1
    assert rule_resources(config, "bookkeeping")["gpu"] == 0
    assert rule_threads(config, "training") == 32


def test_every_rule_takes_its_groups_threads_and_resources():
    seen = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for name, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^rule |\Z)", text):
            if name == "all":
                continue
            group = RULE_GROUPS[name]
            if name in STAGES:  # a stage rule takes all of them from its kind's declared group
                for directive in ("threads: stage_threads", "**stage_resources", "stage_env"):
                    assert f'{directive}("{name}")' in body, (name, directive)
            else:
                assert f'threads: THREADS["{group}"]' in body, name
                assert f'**RESOURCES["{group}"]' in body, name
                assert f"envs/{group}.yaml" in body, name  # the conda env of the same group
            seen[name] = group
    assert set(seen) == set(RULE_GROUPS)


def test_dry_run_of_the_paper_config_through_the_profile_lists_gpu_requests():
    out = run(["snakemake", "--profile", "slurm", "-n", "--configfile", str(PAPER)], cwd=REPO).stdout
    gpu_jobs = re.findall(r"(?ms)^rule (\w+):.*?resources: ([^\n]*)", out)
    requests = {rule: resources for rule, resources in gpu_jobs}
    assert "gpu=8" in requests["dpo"] and "gpu=1" in requests["generate"]
    assert "gpu=0" in requests["spar_data"]


# -- training launch commands -------------------------------------------------------------------
ARGS = ["dpo", "--model", "m", "--data", "d.jsonl", "--out", "o", "--settings", '{"beta": 0.1}']


def test_cpu_or_one_gpu_runs_ifplay_itself():
    assert launch_command(ARGS) == ["ifplay", *ARGS]
    assert launch_command(ARGS, gpus=1) == ["ifplay", *ARGS]


def test_several_gpus_use_accelerate_with_deepspeed_zero3():
    cmd = launch_command(ARGS, gpus=8)
    assert cmd[:2] == ["accelerate", "launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(ACCELERATE_CONFIG)
    assert cmd[cmd.index("--num_processes") + 1] == "8" and cmd[cmd.index("--num_machines") + 1] == "1"
    assert cmd[-len(ARGS) - 2:] == ["-m", "ifplay.cli", *ARGS]
    accelerate = yaml.safe_load(ACCELERATE_CONFIG.read_text())
    assert accelerate["distributed_type"] == "DEEPSPEED" and accelerate["deepspeed_config"]["zero_stage"] == 3
    assert accelerate["deepspeed_config"]["zero3_save_16bit_model"] is True  # save_model gathers the weights


def test_several_nodes_start_one_accelerate_per_node_through_srun():
    cmd = launch_command(ARGS, gpus=8, nodes=4)
    assert cmd[:6] == ["srun", "--nodes", "4", "--ntasks-per-node", "1", "bash"] and cmd[6] == "-c"
    script = cmd[7]
    words = shlex.split(script.split(" --machine_rank")[0])
    assert words[words.index("--num_processes") + 1] == "32" and words[words.index("--num_machines") + 1] == "4"
    assert '--machine_rank "$SLURM_NODEID"' in script
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in script
    assert f"--main_process_port {MAIN_PROCESS_PORT} -m ifplay.cli" in script
    assert shlex.split(script.split("-m ifplay.cli ")[1]) == ARGS  # the JSON settings survive quoting


def test_srun_script_runs_in_bash(tmp_path):
    """The per-node script is valid bash that expands SLURM's variables on each node."""
    script = launch_command(["sft", "--settings", '{"a": "b c"}'], gpus=2, nodes=2)[7]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "accelerate").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (fake / "scontrol").write_text('#!/bin/sh\necho node-a; echo node-b\n')
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "node-[a-b]"}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[out.index("--machine_rank") + 1] == "1" and out[out.index("--main_process_ip") + 1] == "node-a"
    assert out[out.index("--settings") + 1] == '{"a": "b c"}'


def test_bad_launch_shape_is_refused():
    with pytest.raises(ValueError, match="nodes >= 1"):
        launch_command(ARGS, gpus=2, nodes=0)


def test_training_rules_start_through_the_launcher():
    text = (REPO / "workflow" / "rules" / "shared.smk").read_text()
    for kind in (name for name, spec in STAGES.items() if spec.group == "training"):
        assert f"ifplay launch --gpus {{resources.gpu}} --nodes {{resources.nodes}} -- {STAGES[kind].command} " in text


@pytest.mark.parametrize("paper", sorted((REPO / "config" / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_paper_config_validates_and_asks_for_gpus(paper):
    config = load_config([paper])
    assert config["model"]["dtype"] == "bfloat16"
    assert config["spar"]["iterations"] == 3 if paper.stem.startswith("spar-") else config["autoif"]["enabled"]
    assert rule_resources(config, "training")["gpu"] >= 8 and rule_resources(config, "generation")["gpu"] >= 1
    assert config["experiment"] == paper.stem


@pytest.mark.parametrize("paper", sorted((REPO / "config" / "paper").glob("autoif-*.yaml")), ids=lambda p: p.stem)
def test_autoif_paper_configs_plan_strong_to_weak(paper):
    """With the user's files in place (here: AutoIF's seeds from the shared sample data, the builtin
    queries, the LLM as NLI judge), the plan has a separate supervisor and the paper's rows."""
    from ifplay.plan import Plan

    seeds = REPO.parent / "shared" / "data" / "autoif" / "seed_instruction.txt"
    if not seeds.is_file():
        pytest.skip(f"{seeds} not present")
    config = load_config([paper], overrides={"autoif": {"seeds": str(seeds), "queries": {"source": "builtin:autoif"},
                                                        "back_translation": {"nli": "llm"}}})
    plan = Plan(config)
    base = plan.models[0][2]
    supervisor = plan.stage(plan.autoif.filters[1].inputs["model"].key)
    assert supervisor is not base and supervisor.runtime["source"] == config["autoif"]["supervisor"]
    assert plan.autoif.sft.inputs["model"] is base
    assert [label.split("-AutoIF-")[-1] for label, _, _ in plan.models[1:]] == [
        "SFT", "Offline-DPO", "Online-DPO", "Online-DPO"]
    assert config["autoif"]["offline_dpo"]["beta"] == 0.3 and config["autoif"]["sft"]["warmup_steps"] == 20
    assert rule_resources(config, "generation")["gpu"] == 8

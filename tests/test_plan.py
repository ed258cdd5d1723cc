"""Stage keys: stable, content-derived, shared across experiments that agree upstream."""

import re

from conftest import REPO, run
from ifplay.config import load_config
from ifplay.plan import Plan, short_hash

EVAL_LONG = REPO / "config" / "experiments" / "eval-long.yaml"


def plan(*overlays, **overrides) -> Plan:
    return Plan(load_config(list(overlays), overrides or None))


def by_kind(p: Plan) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for key, stage in p.stages.items():
        kinds.setdefault(stage.kind, set()).add(key)
    return kinds


def test_short_hash_is_canonical():
    assert short_hash({"a": 1, "b": [1, 2]}) == short_hash({"b": [1, 2], "a": 1})
    assert short_hash({"a": 1}) != short_hash({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{12}", short_hash({}))


def test_keys_are_stable_across_builds():
    assert list(plan().stages) == list(plan().stages)


def test_experiment_name_and_runtime_settings_do_not_change_keys():
    base = set(plan().stages)
    assert set(plan(experiment="other").stages) == base
    assert set(plan(backend={"batch_size": 3, "max_prompt_tokens": 999}).stages) == base


def test_eval_only_overlay_shares_everything_upstream():
    a, b = by_kind(plan()), by_kind(plan(EVAL_LONG))
    assert a["base_model"] == b["base_model"]
    assert a["prompts"] == b["prompts"]
    assert not (a["eval_responses"] & b["eval_responses"])
    assert not (a["ifeval_scores"] & b["ifeval_scores"])


def test_limit_changes_only_that_benchmark():
    a = plan()
    b = plan(eval={"benchmarks": {"ifeval": {"limit": 5}}})
    shared = set(a.stages) & set(b.stages)
    kinds_shared = {a.stages[k].kind for k in shared}
    assert "base_model" in kinds_shared
    dev_a = {e.scores.key for e in a.evaluations if e.benchmark == "dev"}
    dev_b = {e.scores.key for e in b.evaluations if e.benchmark == "dev"}
    assert dev_a == dev_b  # the dev evaluation is untouched
    if_a = {e.scores.key for e in a.evaluations if e.benchmark == "ifeval"}
    if_b = {e.scores.key for e in b.evaluations if e.benchmark == "ifeval"}
    assert not (if_a & if_b)


def test_model_change_invalidates_downstream(tmp_path):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    a, b = plan(), plan(model={"base": str(model_dir)})
    assert by_kind(a)["prompts"] == by_kind(b)["prompts"]
    assert not (by_kind(a)["eval_responses"] & by_kind(b)["eval_responses"])


def test_local_prompt_file_keyed_by_content_not_path(tmp_path, ifeval_data):
    one, two = tmp_path / "one.jsonl", tmp_path / "sub" / "one.jsonl"
    two.parent.mkdir()
    one.write_bytes(ifeval_data.read_bytes())
    two.write_bytes(ifeval_data.read_bytes())
    assert set(plan(data={"ifeval": str(one)}).stages) == set(plan(data={"ifeval": str(two)}).stages)
    two.write_bytes(ifeval_data.read_bytes()[:-200] + b"\n")
    assert set(plan(data={"ifeval": str(one)}).stages) != set(plan(data={"ifeval": str(two)}).stages)


def dry_run_jobs(*args) -> dict[str, int]:
    """Job counts per rule from `snakemake -n`'s job-stats table."""
    out = run(["snakemake", "-n", "--cores", "1", *args], cwd=REPO).stdout
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def dry_run_outputs(*args) -> set[str]:
    out = run(["snakemake", "-n", "--cores", "1", "--forceall", *args], cwd=REPO).stdout
    return {path.strip() for line in re.findall(r"^\s+output: (.*)$", out, re.M) for path in line.split(",")}


def test_dry_run_job_lists_share_upstream(ifeval_data):
    local = ["--config", f"data={{'ifeval': '{ifeval_data}'}}"]
    default = dry_run_outputs(*local)
    overlay = dry_run_outputs(*local, "--configfile", str(EVAL_LONG))
    shared = default & overlay
    assert any(p.startswith("results/base_model/") for p in shared)
    assert any(p.startswith("results/prompts/") for p in shared)
    assert not any(p.startswith(("results/eval_responses/", "results/ifeval_scores/")) for p in shared)
    jobs = dry_run_jobs(*local, "--forceall")
    assert jobs["base_model"] == 1 and jobs["prompts"] == 2 and jobs["eval_responses"] == 2


SPAR = {"spar": {"enabled": True}}


def test_spar_iterations_chain_and_share_prefixes():
    one, two = plan(**SPAR), plan(spar={"enabled": True, "iterations": 2})
    assert [m[1] for m in two.models] == [0, 1, 2]
    it0, it1 = two.spar
    assert it1.samples.inputs["model"] is it0.actor  # M_1 samples
    assert it1.judged.inputs["refiner"] is it0.refiner  # R_1 judges
    assert it1.actor.inputs["model"] is it0.actor and it1.refiner.inputs["model"] is it0.refiner
    assert set(one.stages) <= set(two.stages)  # a 2-iteration ablation reuses all of iteration 0


def test_verifier_judge_shares_sampling_only():
    model, verifier = plan(**SPAR), plan(spar={"enabled": True, "judge": {"kind": "verifier"}})
    assert model.spar[0].samples.key == verifier.spar[0].samples.key
    assert model.spar[0].judged.key != verifier.spar[0].judged.key
    assert "refiner" not in verifier.spar[0].judged.inputs
    # the verifier's key does not move with model-judge settings it never reads
    other = plan(spar={"enabled": True, "judge": {"kind": "verifier", "votes": 7, "temperature": 0.1}})
    assert other.spar[0].judged.key == verifier.spar[0].judged.key


def test_template_content_is_keyed(tmp_path):
    template = tmp_path / "judge.txt"
    template.write_text((REPO / load_config()["spar"]["judge"]["template"]).read_text())
    same = plan(spar={"enabled": True, "judge": {"template": str(template)}})
    assert same.spar[0].judged.key == plan(**SPAR).spar[0].judged.key
    template.write_text(template.read_text() + "\nBe strict.\n")
    changed = plan(spar={"enabled": True, "judge": {"template": str(template)}})
    assert changed.spar[0].judged.key != same.spar[0].judged.key
    assert changed.spar[0].samples.key == same.spar[0].samples.key


def test_dpo_setting_changes_only_training_and_after():
    a, b = plan(**SPAR), plan(spar={"enabled": True, "actor_dpo": {"beta": 0.3}})
    assert a.spar[0].data.key == b.spar[0].data.key
    assert a.spar[0].refiner.key == b.spar[0].refiner.key
    assert a.spar[0].actor.key != b.spar[0].actor.key

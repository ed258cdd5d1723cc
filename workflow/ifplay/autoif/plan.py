"""AutoIF's part of the stage plan: the data pipeline with the supervisor, then SFT, offline DPO
and online DPO iterations (functions of the :class:`ifplay.plan.Plan` being built, ``plan``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ifplay.core import sources
from ifplay.core.config import ConfigError
from ifplay.core.stages import Stage

@dataclass
class AutoIFRun:
    """The stages of one AutoIF configuration: the data pipeline, then SFT, offline and online DPO."""

    filters: list[Stage]  # the stages with counts.json, in pipeline order
    data: Stage  # autoif_data: D_train's SFT data, offline pairs and the queries with their functions
    sft: Stage
    offline_dpo: Stage | None
    online: list[tuple[Stage, Stage, Stage]]  # (samples, pairs, DPO model) per online iteration


def add_autoif(plan, base: Stage) -> None:
    """AutoIF's data pipeline with the supervisor (``autoif.supervisor`` or the base model), then
    SFT(base) on D_train, offline DPO of the SFT model, and online DPO iterations from it."""
    cfg = plan.config["autoif"]
    backend = plan.backend()
    seed = plan.config["seed"]
    runtime = plan.backend_runtime()
    label = plan.base_label()
    supervisor = plan.other_model(cfg["supervisor"], "autoif.supervisor") if cfg["supervisor"] else base

    def templated(section: dict, key: str, *names: str) -> tuple[dict, dict]:
        """A config section with each template path replaced by its content hash (paths -> runtime)."""
        hashed, paths = dict(section), {}
        for name in names:
            hashed[name], paths[name] = plan.local_file(section[name], f"autoif.{key}.{name}")
        return hashed, paths

    def model_stage(kind: str, settings: dict, inputs: dict, paths: dict | None = None) -> Stage:
        return plan.add(Stage(kind, {**settings, "backend": backend, "seed": seed},
                              {"model": supervisor, **inputs}, runtime={**runtime, **(paths or {})}))

    seeds_path = (sources.local_file(cfg["seeds"], "autoif.seeds") if cfg["seeds"] != "builtin:autoif"
                  else None)
    from ifplay.autoif.stages import BUILTIN_SEEDS  # noqa: PLC0415 - keeps planning light (no torch)

    seeds_path = seeds_path or BUILTIN_SEEDS
    seeds = {"sha256": sources.file_sha256(seeds_path), "limit": cfg["seed_limit"]}
    filters = []
    if cfg["augment"]["enabled"]:
        augment, paths = templated(cfg["augment"], "augment", "template")
        instructions = model_stage("autoif_instructions", {"seeds": seeds, "augment": augment}, {},
                                   {**paths, "seeds": str(seeds_path)})
    else:
        instructions = plan.add(Stage("autoif_instructions", {"seeds": seeds, "augment": None},  # no model
                                      runtime={"seeds": str(seeds_path)}))
    filters.append(instructions)
    verifiers_cfg, paths = templated(cfg["verifiers"], "verifiers",
                                     *(("template", "examples") if cfg["verifiers"]["examples"] else ("template",)))
    verifiers = model_stage("autoif_verifiers", {"verifiers": verifiers_cfg}, {"instructions": instructions},
                            {"examples": None, **paths})  # examples null: zero-shot
    crossval = plan.add(Stage("autoif_crossval", {"cross_validation": cfg["cross_validation"],
                                                  "sandbox": cfg["sandbox"]}, {"verifiers": verifiers}))
    filters += [verifiers, crossval]
    kept = crossval
    if cfg["back_translation"]["enabled"]:
        bt = dict(cfg["back_translation"])
        names = ("template", "nli_template") if bt["nli"] == "llm" else ("template",)
        bt, paths = templated(bt, "back_translation", *names)
        if bt["nli"] == "classifier":
            if not bt["nli_model"]:
                raise ConfigError("autoif.back_translation.nli_model: the classifier NLI needs a model "
                                  "(or set autoif.back_translation.nli: llm)")
            bt.pop("nli_template")
            bt["nli_model"], paths["nli_model"] = nli_model(plan, bt["nli_model"])
        else:
            bt.pop("nli_model")
        kept = model_stage("autoif_backtrans", {"back_translation": bt}, {"instructions": crossval}, paths)
        filters.append(kept)
    queries_cfg, paths = templated(cfg["queries"], "queries", "template")
    source = queries_cfg.pop("source")
    if source != "builtin:autoif":
        paths["source"] = str(sources.local_file(source, "autoif.queries.source"))
        queries_cfg["source"] = {"sha256": sources.file_sha256(Path(paths["source"]))}
    else:
        paths["source"] = source
        queries_cfg["source"] = source
    queries = plan.add(Stage("autoif_queries", {"queries": queries_cfg, "seed": seed}, {"instructions": kept},
                             runtime=paths))
    responses = model_stage("autoif_responses", {"responses": cfg["responses"]}, {"queries": queries})
    verified = plan.add(Stage("autoif_verified", {"rejection": cfg["rejection"], "sandbox": cfg["sandbox"]},
                              {"responses": responses}))
    filters += [queries, verified]
    data_inputs = {"verified": verified}
    if cfg["quality"]["enabled"]:
        quality, paths = templated(cfg["quality"], "quality", "template")
        scored = model_stage("autoif_scored", {"quality": quality}, {"verified": verified}, paths)
        filters.append(scored)
        data_inputs["scored"] = scored
    data = plan.add(Stage("autoif_data", {"pairs": cfg["pairs"], "seed": seed}, data_inputs))
    filters.append(data)

    sft = plan.fine_tune("sft", cfg["sft"], base, data, "sft.jsonl")
    plan.models.append((f"{label}-AutoIF-SFT", 0, sft))
    offline = plan.fine_tune("dpo", cfg["offline_dpo"], sft, data)
    plan.models.append((f"{label}-AutoIF-Offline-DPO", 1, offline))
    online, policy = [], sft
    online_cfg = dict(cfg["online_dpo"])
    training = online_cfg.pop("training")
    iterations = online_cfg.pop("iterations")
    for t in range(iterations):
        samples = plan.samples(policy, data, online_cfg, files={"prompts": "queries.jsonl"})
        pairs = plan.add(Stage("autoif_online_pairs", {"pairs": cfg["pairs"], "sandbox": cfg["sandbox"], "seed": seed},
                               {"queries": data, "samples": samples}, files={"queries": "queries.jsonl"}))
        policy = plan.fine_tune("dpo", training, policy, pairs)
        online.append((samples, pairs, policy))
        filters.append(pairs)
        plan.models.append((f"{label}-AutoIF-Online-DPO", t + 1, policy))
    plan.autoif = AutoIFRun(filters, data, sft, offline, online)


def nli_model(plan, path: str) -> tuple[dict, str]:
    """An NLI classifier directory: its config and weights' hashes (hashed) and its path (runtime)."""
    resolved = Path(path).expanduser()
    if not resolved.is_dir():
        raise ConfigError(f"autoif.back_translation.nli_model: {path}: no such model directory")
    files = sorted(p for p in resolved.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".model"))
    return {"files": {p.name: sources.file_sha256(p) for p in files}}, str(resolved)

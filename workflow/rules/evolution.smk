# SPaR's prompt evolution: the teacher (config `teacher`) rewrites seed prompts into constrained
# prompts; with spar.prompt_source: evolved they are SPaR's prompt pool (first spar.prompt_limit).


def teacher_args(wildcards, input):
    """--teacher: the teacher's checkpoint (an input stage), or the model name a server serves."""
    stage = PLAN.stage(wildcards.key)
    model = input.teacher if "teacher" in stage.inputs else stage.runtime["model"]
    return (f"--teacher {shlex.quote(str(model))} --backend {stage.runtime['backend']}"
            f" --backend-options {shlex.quote(stage.runtime['backend_options'])}"
            f" --batch-size {stage.runtime['batch_size']} --max-prompt-tokens {stage.runtime['max_prompt_tokens']}")


def evolution_args(wildcards):
    """Flags of the evolution settings (prompt_evolution), from the stage's hashed config."""
    stage = PLAN.stage(wildcards.key)
    cfg = stage.config["evolution"]
    flags = [f"--seeds {shlex.quote(stage.runtime['source'])}", f"--limit {cfg['limit'] or 0}",
             f"--template {shlex.quote(stage.runtime['template'])}",
             f"--min-others {cfg['others'][0]} --max-others {cfg['others'][1]}",
             f"--temperature {cfg['temperature']} --top-p {cfg['top_p']}",
             f"--max-new-tokens {cfg['max_new_tokens']} --seed {stage.config['seed']}"]
    if cfg["categories"]:
        flags.append(f"--taxonomy {shlex.quote(json.dumps(cfg['categories']))}")
    return " ".join(flags)


rule evolved_prompts:
    input:
        unpack(stage_inputs),
        seeds=local_source,
    output:
        prompts=stage_output("evolved_prompts"),
        evolved=stage_output("evolved_prompts", "evolved.jsonl"),
        counts=stage_output("evolved_prompts", "counts.json"),
        usage=stage_output("evolved_prompts", "usage.json"),
    params:
        teacher=teacher_args,
        evolution=evolution_args,
    log:
        "logs/evolved_prompts/{key}.log",
    benchmark:
        "logs/evolved_prompts/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay evolve-prompts {params.evolution} {params.teacher} --threads {threads}"
        " --out {output.prompts} --evolved {output.evolved} --counts {output.counts} --usage {output.usage}"
        " > {log} 2>&1"


rule prompt_subset:
    input:
        prompts=upstream("prompts"),
    output:
        prompts=stage_output("prompt_subset"),
    params:
        limit=lambda wildcards: PLAN.stage(wildcards.key).config["limit"] or 0,
    log:
        "logs/prompt_subset/{key}.log",
    benchmark:
        "logs/prompt_subset/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay prompt-subset --prompts {input.prompts} --limit {params.limit} --out {output.prompts} > {log} 2>&1"

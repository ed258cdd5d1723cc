# SPaR's prompt evolution: the teacher (config `teacher`) rewrites seed prompts into constrained
# prompts; with spar.prompt_source: evolved they are SPaR's prompt pool (first spar.prompt_limit).


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

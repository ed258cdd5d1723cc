# SPaR's prompt evolution: the teacher (config `teacher`) rewrites seed prompts into constrained
# prompts; with spar.prompt_source: evolved they are SPaR's prompt pool (first spar.prompt_limit).


rule evolved_prompts:
    input:
        unpack(stage_inputs),
    output:
        prompts=stage_output("evolved_prompts"),
        evolved=stage_output("evolved_prompts", "evolved.jsonl"),
        counts=stage_output("evolved_prompts", "counts.json"),
        usage=stage_output("evolved_prompts", "usage.json"),
    params:
        teacher=optional_input("teacher"),
        settings=stage_settings,
    log:
        stage_log("evolved_prompts"),
    benchmark:
        stage_benchmark("evolved_prompts")
    conda:
        stage_env("evolved_prompts")
    threads: stage_threads("evolved_prompts")
    resources:
        **stage_resources("evolved_prompts"),
    shell:
        "ifplay evolved-prompts {params.teacher} --out {output.prompts} --evolved {output.evolved}"
        " --counts {output.counts} --usage {output.usage} --settings {params.settings:q} --threads {threads}"
        " > {log} 2>&1"


rule prompt_subset:
    input:
        prompts=upstream("prompts"),
    output:
        prompts=stage_output("prompt_subset"),
    params:
        settings=stage_settings,
    log:
        stage_log("prompt_subset"),
    benchmark:
        stage_benchmark("prompt_subset")
    conda:
        stage_env("prompt_subset")
    threads: stage_threads("prompt_subset")
    resources:
        **stage_resources("prompt_subset"),
    shell:
        "ifplay prompt-subset --prompts {input.prompts} --settings {params.settings:q} --out {output.prompts}"
        " > {log} 2>&1"

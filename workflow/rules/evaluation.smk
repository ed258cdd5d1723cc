rule ifeval_scores:
    input:
        prompts=upstream("prompts"),
        responses=upstream("responses"),
    output:
        metrics=stage_output("ifeval_scores"),
        per_prompt=stage_output("ifeval_scores", "per_prompt.jsonl"),
    log:
        stage_log("ifeval_scores"),
    benchmark:
        stage_benchmark("ifeval_scores")
    conda:
        stage_env("ifeval_scores")
    threads: stage_threads("ifeval_scores")
    resources:
        **stage_resources("ifeval_scores"),
    shell:
        "ifplay ifeval-scores --prompts {input.prompts} --responses {input.responses}"
        " --metrics {output.metrics} --per-prompt {output.per_prompt} > {log} 2>&1"


rule judge_eval:
    input:
        prompts=upstream("prompts"),
        responses=upstream("responses"),
        refiner=upstream("refiner"),
    output:
        judged=stage_output("judge_eval", "judged.jsonl"),
        per_item=stage_output("judge_eval", "per_item.jsonl"),
        metrics=stage_output("judge_eval"),
    params:
        settings=stage_settings,
    log:
        stage_log("judge_eval"),
    benchmark:
        stage_benchmark("judge_eval")
    conda:
        stage_env("judge_eval")
    threads: stage_threads("judge_eval")
    resources:
        **stage_resources("judge_eval"),
    shell:
        "ifplay judge-eval --prompts {input.prompts} --responses {input.responses} --refiner {input.refiner}"
        " --out {output.judged} --per-item {output.per_item} --metrics {output.metrics}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"

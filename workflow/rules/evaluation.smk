rule eval_responses:
    input:
        model=upstream("model"),
        prompts=upstream("prompts"),
    output:
        responses=stage_output("eval_responses"),
    params:
        backend=setting("backend"),
        temperature=setting("decoding", "temperature"),
        top_p=setting("decoding", "top_p"),
        max_new_tokens=setting("decoding", "max_new_tokens"),
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
        backend_options=runtime("backend_options"),
    log:
        "logs/eval_responses/{key}.log",
    benchmark:
        "logs/eval_responses/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay generate --model {input.model} --prompts {input.prompts} --out {output.responses}"
        " --backend {params.backend} --backend-options {params.backend_options:q}"
        " --temperature {params.temperature} --top-p {params.top_p}"
        " --max-new-tokens {params.max_new_tokens} --batch-size {params.batch_size}"
        " --max-prompt-tokens {params.max_prompt_tokens} --threads {threads} > {log} 2>&1"


rule ifeval_scores:
    input:
        prompts=upstream("prompts"),
        responses=upstream("responses"),
    output:
        metrics=stage_output("ifeval_scores"),
        per_prompt=stage_output("ifeval_scores", "per_prompt.jsonl"),
    log:
        "logs/ifeval_scores/{key}.log",
    benchmark:
        "logs/ifeval_scores/{key}.benchmark.tsv"
    conda:
        "../../envs/evaluation.yaml"
    threads: THREADS["evaluation"]
    resources:
        **RESOURCES["evaluation"],
    shell:
        "ifplay score ifeval --data {input.prompts} --responses {input.responses}"
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
        judge=judge_args,
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
    log:
        "logs/judge_eval/{key}.log",
    benchmark:
        "logs/judge_eval/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay judge-eval --prompts {input.prompts} --responses {input.responses} --out {output.judged}"
        " --per-item {output.per_item} --metrics {output.metrics} {params.judge}"
        " --batch-size {params.batch_size} --max-prompt-tokens {params.max_prompt_tokens}"
        " --threads {threads} > {log} 2>&1"

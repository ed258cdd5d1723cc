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


rule ifbench_scores:
    input:
        prompts=upstream("prompts"),
        responses=upstream("responses"),
    output:
        metrics=stage_output("ifbench_scores"),
        per_prompt=stage_output("ifbench_scores", "per_prompt.jsonl"),
    log:
        stage_log("ifbench_scores"),
    benchmark:
        stage_benchmark("ifbench_scores")
    conda:
        stage_env("ifbench_scores")
    threads: stage_threads("ifbench_scores")
    resources:
        **stage_resources("ifbench_scores"),
    shell:
        "ifplay ifbench-scores --prompts {input.prompts} --responses {input.responses}"
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


rule followbench_prompts:
    input:
        model=upstream("model"),
    output:
        prompts=stage_output("followbench_prompts"),
    params:
        settings=stage_settings,
    log:
        stage_log("followbench_prompts"),
    benchmark:
        stage_benchmark("followbench_prompts")
    conda:
        stage_env("followbench_prompts")
    threads: stage_threads("followbench_prompts")
    resources:
        **stage_resources("followbench_prompts"),
    shell:
        "ifplay followbench-prompts --model {input.model} --out {output.prompts} --settings {params.settings:q}"
        " > {log} 2>&1"


rule followbench_judgements:
    input:
        unpack(stage_inputs),
    output:
        judged=stage_output("followbench_judgements"),
    params:
        settings=stage_settings,
        judge=optional_input("judge"),
    log:
        stage_log("followbench_judgements"),
    benchmark:
        stage_benchmark("followbench_judgements")
    conda:
        stage_env("followbench_judgements")
    threads: stage_threads("followbench_judgements")
    resources:
        **stage_resources("followbench_judgements"),
    shell:
        "ifplay followbench-judgements --prompts {input.prompts} --responses {input.responses} {params.judge}"
        " --out {output.judged} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule followbench_scores:
    input:
        unpack(stage_inputs),
    output:
        metrics=stage_output("followbench_scores"),
        per_item=stage_output("followbench_scores", "per_item.jsonl"),
    params:
        settings=stage_settings,
        judged=optional_input("judged"),
    log:
        stage_log("followbench_scores"),
    benchmark:
        stage_benchmark("followbench_scores")
    conda:
        stage_env("followbench_scores")
    threads: stage_threads("followbench_scores")
    resources:
        **stage_resources("followbench_scores"),
    shell:
        "ifplay followbench-scores --prompts {input.prompts} --responses {input.responses} {params.judged}"
        " --metrics {output.metrics} --per-item {output.per_item} --settings {params.settings:q} > {log} 2>&1"


rule llmbar_items:
    output:
        pointwise=stage_output("llmbar_items"),
    params:
        settings=stage_settings,
    log:
        stage_log("llmbar_items"),
    benchmark:
        stage_benchmark("llmbar_items")
    conda:
        stage_env("llmbar_items")
    threads: stage_threads("llmbar_items")
    resources:
        **stage_resources("llmbar_items"),
    shell:
        "ifplay llmbar-items --out {output.pointwise} --settings {params.settings:q} > {log} 2>&1"


rule llmbar_judgements:
    input:
        unpack(stage_inputs),
    output:
        judged=stage_output("llmbar_judgements"),
    params:
        settings=stage_settings,
        refiner=optional_input("refiner"),
    log:
        stage_log("llmbar_judgements"),
    benchmark:
        stage_benchmark("llmbar_judgements")
    conda:
        stage_env("llmbar_judgements")
    threads: stage_threads("llmbar_judgements")
    resources:
        **stage_resources("llmbar_judgements"),
    shell:
        "ifplay llmbar-judgements --items {input.pointwise} {params.refiner} --out {output.judged}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule llmbar_scores:
    input:
        pointwise=upstream("pointwise"),
        judged=upstream("judged"),
    output:
        metrics=stage_output("llmbar_scores"),
    params:
        settings=stage_settings,
    log:
        stage_log("llmbar_scores"),
    benchmark:
        stage_benchmark("llmbar_scores")
    conda:
        stage_env("llmbar_scores")
    threads: stage_threads("llmbar_scores")
    resources:
        **stage_resources("llmbar_scores"),
    shell:
        "ifplay llmbar-scores --items {input.pointwise} --judged {input.judged} --metrics {output.metrics}"
        " --settings {params.settings:q} > {log} 2>&1"


rule general_eval:
    input:
        model=upstream("model"),
    output:
        metrics=stage_output("general_eval"),
        results=stage_output("general_eval", "results.json"),
        samples=directory(stage_output("general_eval", "samples")),
    params:
        settings=stage_settings,
        out_dir=lambda wildcards, output: str(Path(output.metrics).parent),
    log:
        stage_log("general_eval"),
    benchmark:
        stage_benchmark("general_eval")
    conda:
        stage_env("general_eval")
    threads: stage_threads("general_eval")
    resources:
        **stage_resources("general_eval"),
    shell:
        "ifplay general-eval --model {input.model} --out-dir {params.out_dir} --settings {params.settings:q}"
        " --threads {threads} > {log} 2>&1"

# AutoIF (arXiv 2406.13542): the supervisor writes instructions, verifiers and responses; the
# verifier sandbox executes the verifiers; each filter writes counts.json (kept and dropped).
# Then SFT(base) on D_train, offline DPO(SFT) and online DPO iterations: sft, dpo and generate (the
# policy's samples) are in shared.smk.
# autoif_prompts turns the queries into SPaR's prompt pool (spar.prompt_source: autoif).


rule autoif_instructions:
    input:
        unpack(stage_inputs),
    output:
        instructions=stage_output("autoif_instructions"),
        counts=stage_output("autoif_instructions", "counts.json"),
    params:
        model=lambda wildcards, input: f"--model {input.model}" if "model" in input.keys() else "",
        settings=stage_settings,
    log:
        stage_log("autoif_instructions"),
    benchmark:
        stage_benchmark("autoif_instructions")
    conda:
        stage_env("autoif_instructions")
    threads: stage_threads("autoif_instructions")
    resources:
        **stage_resources("autoif_instructions"),
    shell:
        "ifplay autoif-instructions {params.model} --out {output.instructions} --counts {output.counts}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule autoif_verifiers:
    input:
        model=upstream("model"),
        instructions=upstream("instructions"),
    output:
        verifiers=stage_output("autoif_verifiers"),
        counts=stage_output("autoif_verifiers", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_verifiers"),
    benchmark:
        stage_benchmark("autoif_verifiers")
    conda:
        stage_env("autoif_verifiers")
    threads: stage_threads("autoif_verifiers")
    resources:
        **stage_resources("autoif_verifiers"),
    shell:
        "ifplay autoif-verifiers --model {input.model} --instructions {input.instructions}"
        " --out {output.verifiers} --counts {output.counts} --settings {params.settings:q} --threads {threads}"
        " > {log} 2>&1"


rule autoif_crossval:
    input:
        verifiers=upstream("verifiers"),
    output:
        instructions=stage_output("autoif_crossval"),
        counts=stage_output("autoif_crossval", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_crossval"),
    benchmark:
        stage_benchmark("autoif_crossval")
    conda:
        stage_env("autoif_crossval")
    threads: stage_threads("autoif_crossval")
    resources:
        **stage_resources("autoif_crossval"),
    shell:
        "ifplay autoif-crossval --verifiers {input.verifiers} --out {output.instructions} --counts {output.counts}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule autoif_backtrans:
    input:
        model=upstream("model"),
        instructions=upstream("instructions"),
    output:
        instructions=stage_output("autoif_backtrans"),
        counts=stage_output("autoif_backtrans", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_backtrans"),
    benchmark:
        stage_benchmark("autoif_backtrans")
    conda:
        stage_env("autoif_backtrans")
    threads: stage_threads("autoif_backtrans")
    resources:
        **stage_resources("autoif_backtrans"),
    shell:
        "ifplay autoif-backtrans --model {input.model} --instructions {input.instructions}"
        " --out {output.instructions} --counts {output.counts} --settings {params.settings:q} --threads {threads}"
        " > {log} 2>&1"


rule autoif_queries:
    input:
        instructions=upstream("instructions"),
    output:
        queries=stage_output("autoif_queries"),
        counts=stage_output("autoif_queries", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_queries"),
    benchmark:
        stage_benchmark("autoif_queries")
    conda:
        stage_env("autoif_queries")
    threads: stage_threads("autoif_queries")
    resources:
        **stage_resources("autoif_queries"),
    shell:
        "ifplay autoif-queries --instructions {input.instructions} --out {output.queries} --counts {output.counts}"
        " --settings {params.settings:q} > {log} 2>&1"


rule autoif_responses:
    input:
        model=upstream("model"),
        queries=upstream("queries"),
    output:
        responses=stage_output("autoif_responses"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_responses"),
    benchmark:
        stage_benchmark("autoif_responses")
    conda:
        stage_env("autoif_responses")
    threads: stage_threads("autoif_responses")
    resources:
        **stage_resources("autoif_responses"),
    shell:
        "ifplay autoif-responses --model {input.model} --queries {input.queries} --out {output.responses}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule autoif_verified:
    input:
        responses=upstream("responses"),
    output:
        verified=stage_output("autoif_verified"),
        counts=stage_output("autoif_verified", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_verified"),
    benchmark:
        stage_benchmark("autoif_verified")
    conda:
        stage_env("autoif_verified")
    threads: stage_threads("autoif_verified")
    resources:
        **stage_resources("autoif_verified"),
    shell:
        "ifplay autoif-verified --input {input.responses} --out {output.verified} --counts {output.counts}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule autoif_scored:
    input:
        model=upstream("model"),
        verified=upstream("verified"),
    output:
        scored=stage_output("autoif_scored"),
        counts=stage_output("autoif_scored", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_scored"),
    benchmark:
        stage_benchmark("autoif_scored")
    conda:
        stage_env("autoif_scored")
    threads: stage_threads("autoif_scored")
    resources:
        **stage_resources("autoif_scored"),
    shell:
        "ifplay autoif-scored --model {input.model} --verified {input.verified} --out {output.scored}"
        " --counts {output.counts} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule autoif_data:
    input:
        unpack(stage_inputs),
    output:
        pairs=stage_output("autoif_data"),
        sft=stage_output("autoif_data", "sft.jsonl"),
        queries=stage_output("autoif_data", "queries.jsonl"),
        counts=stage_output("autoif_data", "counts.json"),
    params:
        scored=lambda wildcards, input: f"--scored {input.scored}" if "scored" in input.keys() else "",
        settings=stage_settings,
    log:
        stage_log("autoif_data"),
    benchmark:
        stage_benchmark("autoif_data")
    conda:
        stage_env("autoif_data")
    threads: stage_threads("autoif_data")
    resources:
        **stage_resources("autoif_data"),
    shell:
        "ifplay autoif-data --verified {input.verified} {params.scored} --sft {output.sft} --pairs {output.pairs}"
        " --queries {output.queries} --counts {output.counts} --settings {params.settings:q} > {log} 2>&1"


rule autoif_online_pairs:
    input:
        queries=upstream("queries"),
        samples=upstream("samples"),
    output:
        pairs=stage_output("autoif_online_pairs"),
        counts=stage_output("autoif_online_pairs", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_online_pairs"),
    benchmark:
        stage_benchmark("autoif_online_pairs")
    conda:
        stage_env("autoif_online_pairs")
    threads: stage_threads("autoif_online_pairs")
    resources:
        **stage_resources("autoif_online_pairs"),
    shell:
        "ifplay autoif-online-pairs --queries {input.queries} --samples {input.samples} --out {output.pairs}"
        " --counts {output.counts} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule autoif_prompts:
    input:
        queries=upstream("queries"),
    output:
        prompts=stage_output("autoif_prompts"),
    params:
        settings=stage_settings,
    log:
        stage_log("autoif_prompts"),
    benchmark:
        stage_benchmark("autoif_prompts")
    conda:
        stage_env("autoif_prompts")
    threads: stage_threads("autoif_prompts")
    resources:
        **stage_resources("autoif_prompts"),
    shell:
        "ifplay autoif-prompts --queries {input.queries} --out {output.prompts} --settings {params.settings:q}"
        " > {log} 2>&1"

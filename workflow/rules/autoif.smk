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
        seeds=runtime("seeds"),
        seed_limit=runtime("seed_limit"),
        augment=augment_args,
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
        "ifplay autoif-instructions --seeds {params.seeds:q} --seed-limit {params.seed_limit} --out {output.instructions} --counts {output.counts}"
        " {params.augment} --threads {threads} > {log} 2>&1"


rule autoif_verifiers:
    input:
        model=upstream("model"),
        instructions=upstream("instructions"),
    output:
        verifiers=stage_output("autoif_verifiers"),
        counts=stage_output("autoif_verifiers", "counts.json"),
    params:
        template=runtime("template"),
        examples=lambda wildcards: (f"--examples {shlex.quote(PLAN.stage(wildcards.key).runtime['examples'])}"
                                    f" --shots {PLAN.stage(wildcards.key).config['verifiers']['shots']}"
                                    if "examples" in PLAN.stage(wildcards.key).runtime else ""),
        generation=supervisor_args("verifiers", "k"),
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
        "ifplay autoif-verifiers --model {input.model} --instructions {input.instructions} --template {params.template:q}"
        " {params.examples}"
        " --out {output.verifiers} --counts {output.counts} {params.generation} --threads {threads} > {log} 2>&1"


rule autoif_crossval:
    input:
        verifiers=upstream("verifiers"),
    output:
        instructions=stage_output("autoif_crossval"),
        counts=stage_output("autoif_crossval", "counts.json"),
    params:
        filter=lambda wildcards: PLAN.stage(wildcards.key).config["cross_validation"],
        keep_all=lambda wildcards: "" if PLAN.stage(wildcards.key).config["cross_validation"]["enabled"] else "--keep-all",
        sandbox=sandbox_args,
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
        " --case-agreement {params.filter[case_agreement]} --function-accuracy {params.filter[function_accuracy]}"
        " --min-functions {params.filter[min_functions]} --min-cases {params.filter[min_cases]} {params.keep_all}"
        " {params.sandbox} --workers {threads} > {log} 2>&1"


rule autoif_backtrans:
    input:
        model=upstream("model"),
        instructions=upstream("instructions"),
    output:
        instructions=stage_output("autoif_backtrans"),
        counts=stage_output("autoif_backtrans", "counts.json"),
    params:
        settings=setting("back_translation"),
        template=runtime("template"),
        nli=lambda wildcards: (f"--nli-template {PLAN.stage(wildcards.key).runtime['nli_template']}"
                               if PLAN.stage(wildcards.key).config["back_translation"]["nli"] == "llm"
                               else f"--nli-model {PLAN.stage(wildcards.key).runtime['nli_model']}"),
        generation=supervisor_args("back_translation"),
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
        " --template {params.template:q} --functions {params.settings[functions]} --nli {params.settings[nli]} {params.nli}"
        " --out {output.instructions} --counts {output.counts} {params.generation} --temperature 0"
        " --threads {threads} > {log} 2>&1"


rule autoif_queries:
    input:
        instructions=upstream("instructions"),
    output:
        queries=stage_output("autoif_queries"),
        counts=stage_output("autoif_queries", "counts.json"),
    params:
        settings=setting("queries"),
        source=runtime("source"),
        template=runtime("template"),
        seed=setting("seed"),
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
        "ifplay autoif-queries --instructions {input.instructions} --queries {params.source:q} --template {params.template:q}"
        " --per-instruction {params.settings[per_instruction]} --min-chars {params.settings[min_chars]}"
        " --max-chars {params.settings[max_chars]} --seed {params.seed} --out {output.queries} --counts {output.counts}"
        " > {log} 2>&1"


rule autoif_responses:
    input:
        model=upstream("model"),
        queries=upstream("queries"),
    output:
        responses=stage_output("autoif_responses"),
    params:
        generation=supervisor_args("responses", "k"),
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
        " {params.generation} --threads {threads} > {log} 2>&1"


rule autoif_verified:
    input:
        responses=upstream("responses"),
    output:
        verified=stage_output("autoif_verified"),
        counts=stage_output("autoif_verified", "counts.json"),
    params:
        threshold=setting("rejection", "threshold"),
        sandbox=sandbox_args,
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
        " --threshold {params.threshold} {params.sandbox} --workers {threads} > {log} 2>&1"


rule autoif_scored:
    input:
        model=upstream("model"),
        verified=upstream("verified"),
    output:
        scored=stage_output("autoif_scored"),
        counts=stage_output("autoif_scored", "counts.json"),
    params:
        template=runtime("template"),
        min_score=setting("quality", "min_score"),
        generation=supervisor_args("quality", "samples"),
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
        "ifplay autoif-scored --model {input.model} --verified {input.verified} --template {params.template:q}"
        " --min-score {params.min_score} --out {output.scored} --counts {output.counts} {params.generation}"
        " --threads {threads} > {log} 2>&1"


rule autoif_data:
    input:
        unpack(stage_inputs),
    output:
        pairs=stage_output("autoif_data"),
        sft=stage_output("autoif_data", "sft.jsonl"),
        queries=stage_output("autoif_data", "queries.jsonl"),
        counts=stage_output("autoif_data", "counts.json"),
    params:
        pairs=setting("pairs"),
        scored=lambda wildcards, input: f"--scored {input.scored}" if "scored" in input.keys() else "",
        instruction_level=lambda wildcards: ("--instruction-level"
                                             if PLAN.stage(wildcards.key).config["pairs"]["instruction_level"] else ""),
        seed=setting("seed"),
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
        "ifplay autoif-data --verified {input.verified} {params.scored} --chosen-min {params.pairs[chosen_min]}"
        " --rejected-max {params.pairs[rejected_max]} --pairs-per-side {params.pairs[per_side]} {params.instruction_level}"
        " --seed {params.seed} --sft {output.sft} --pairs {output.pairs} --queries {output.queries}"
        " --counts {output.counts} > {log} 2>&1"


rule autoif_online_pairs:
    input:
        queries=upstream("queries"),
        samples=upstream("samples"),
    output:
        pairs=stage_output("autoif_online_pairs"),
        counts=stage_output("autoif_online_pairs", "counts.json"),
    params:
        pairs=setting("pairs"),
        seed=setting("seed"),
        sandbox=sandbox_args,
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
        " --counts {output.counts} --chosen-min {params.pairs[chosen_min]} --rejected-max {params.pairs[rejected_max]}"
        " --pairs-per-side {params.pairs[per_side]} --seed {params.seed} {params.sandbox} --workers {threads}"
        " > {log} 2>&1"


rule autoif_prompts:
    input:
        queries=upstream("queries"),
    output:
        prompts=stage_output("autoif_prompts"),
    params:
        limit=lambda wildcards: PLAN.stage(wildcards.key).config["limit"] or 0,
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
        "ifplay autoif-prompts --queries {input.queries} --limit {params.limit} --out {output.prompts} > {log} 2>&1"

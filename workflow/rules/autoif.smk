# AutoIF (arXiv 2406.13542): the supervisor writes instructions, verifiers and responses; the
# verifier sandbox executes the verifiers; each filter writes counts.json (kept and dropped).
# Then SFT(base) on D_train, offline DPO(SFT) and online DPO iterations (actor_dpo in spar.smk).
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
        "logs/autoif_instructions/{key}.log",
    benchmark:
        "logs/autoif_instructions/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
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
        "logs/autoif_verifiers/{key}.log",
    benchmark:
        "logs/autoif_verifiers/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
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
        "logs/autoif_crossval/{key}.log",
    benchmark:
        "logs/autoif_crossval/{key}.benchmark.tsv"
    conda:
        "../../envs/evaluation.yaml"
    threads: THREADS["evaluation"]
    resources:
        **RESOURCES["evaluation"],
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
        "logs/autoif_backtrans/{key}.log",
    benchmark:
        "logs/autoif_backtrans/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay autoif-backtranslate --model {input.model} --instructions {input.instructions}"
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
        "logs/autoif_queries/{key}.log",
    benchmark:
        "logs/autoif_queries/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
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
        "logs/autoif_responses/{key}.log",
    benchmark:
        "logs/autoif_responses/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
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
        "logs/autoif_verified/{key}.log",
    benchmark:
        "logs/autoif_verified/{key}.benchmark.tsv"
    conda:
        "../../envs/evaluation.yaml"
    threads: THREADS["evaluation"]
    resources:
        **RESOURCES["evaluation"],
    shell:
        "ifplay autoif-verify-responses --input {input.responses} --out {output.verified} --counts {output.counts}"
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
        "logs/autoif_scored/{key}.log",
    benchmark:
        "logs/autoif_scored/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay autoif-score --model {input.model} --verified {input.verified} --template {params.template:q}"
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
        "logs/autoif_data/{key}.log",
    benchmark:
        "logs/autoif_data/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay autoif-data --verified {input.verified} {params.scored} --chosen-min {params.pairs[chosen_min]}"
        " --rejected-max {params.pairs[rejected_max]} --pairs-per-side {params.pairs[per_side]} {params.instruction_level}"
        " --seed {params.seed} --sft {output.sft} --pairs {output.pairs} --queries {output.queries}"
        " --counts {output.counts} > {log} 2>&1"


rule autoif_sft:
    input:
        model=upstream("model"),
        data=upstream("data", "sft.jsonl"),
    output:
        checkpoint=directory(stage_output("autoif_sft")),
    params:
        settings=training_settings,
    log:
        "logs/autoif_sft/{key}.log",
    benchmark:
        "logs/autoif_sft/{key}.benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: THREADS["training"]
    resources:
        **RESOURCES["training"],
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- train-sft --model {input.model} --data {input.data}"
        " --out {output.checkpoint} --settings {params.settings:q} --if-empty keep --threads {threads} > {log} 2>&1"


rule autoif_online_samples:
    input:
        model=upstream("model"),
        queries=upstream("queries", "queries.jsonl"),
    output:
        samples=stage_output("autoif_online_samples"),
    params:
        generation=supervisor_args("sampling", "k"),
    log:
        "logs/autoif_online_samples/{key}.log",
    benchmark:
        "logs/autoif_online_samples/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay generate --model {input.model} --prompts {input.queries} --out {output.samples}"
        " {params.generation} --threads {threads} > {log} 2>&1"


rule autoif_online_pairs:
    input:
        queries=upstream("queries", "queries.jsonl"),
        samples=upstream("samples"),
    output:
        pairs=stage_output("autoif_online_pairs"),
        counts=stage_output("autoif_online_pairs", "counts.json"),
    params:
        pairs=setting("pairs"),
        seed=setting("seed"),
        sandbox=sandbox_args,
    log:
        "logs/autoif_online_pairs/{key}.log",
    benchmark:
        "logs/autoif_online_pairs/{key}.benchmark.tsv"
    conda:
        "../../envs/evaluation.yaml"
    threads: THREADS["evaluation"]
    resources:
        **RESOURCES["evaluation"],
    shell:
        "ifplay autoif-online-pairs --queries {input.queries} --samples {input.samples} --out {output.pairs}"
        " --counts {output.counts} --chosen-min {params.pairs[chosen_min]} --rejected-max {params.pairs[rejected_max]}"
        " --pairs-per-side {params.pairs[per_side]} --seed {params.seed} {params.sandbox} --workers {threads}"
        " > {log} 2>&1"


rule autoif_prompts:
    input:
        queries=upstream("queries", "queries.jsonl"),
    output:
        prompts=stage_output("autoif_prompts"),
    params:
        limit=lambda wildcards: PLAN.stage(wildcards.key).config["limit"] or 0,
    log:
        "logs/autoif_prompts/{key}.log",
    benchmark:
        "logs/autoif_prompts/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay autoif-prompts --queries {input.queries} --limit {params.limit} --out {output.prompts} > {log} 2>&1"

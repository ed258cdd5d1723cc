# Stages every method and evaluation uses: a model's responses (greedy or sampled), judgements of
# responses, and the two trainings (DPO on pairs, SFT on conversations). What each reads is the
# plan's business (ifplay/plan.py): the same rule serves SPaR, AutoIF and the evaluations.


rule generate:
    input:
        model=upstream("model"),
        prompts=upstream("prompts"),
    output:
        responses=stage_output("generate"),
    params:
        settings=stage_settings,
    log:
        stage_log("generate"),
    benchmark:
        stage_benchmark("generate")
    conda:
        stage_env("generate")
    threads: stage_threads("generate")
    resources:
        **stage_resources("generate"),
    shell:
        "ifplay generate --model {input.model} --prompts {input.prompts} --out {output.responses}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule judgements:
    input:
        unpack(stage_inputs),
    output:
        judged=stage_output("judgements"),
    params:
        refiner=optional_input("refiner"),
        settings=stage_settings,
    log:
        stage_log("judgements"),
    benchmark:
        stage_benchmark("judgements")
    conda:
        stage_env("judgements")
    threads: stage_threads("judgements")
    resources:
        **stage_resources("judgements"),
    shell:
        "ifplay judgements --prompts {input.prompts} --responses {input.samples} {params.refiner}"
        " --out {output.judged} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule dpo:
    input:
        model=upstream("model"),
        pairs=upstream("data"),
    output:
        checkpoint=directory(stage_output("dpo")),
    params:
        settings=stage_settings,
    log:
        stage_log("dpo"),
    benchmark:
        stage_benchmark("dpo")
    conda:
        stage_env("dpo")
    threads: stage_threads("dpo")
    resources:
        **stage_resources("dpo"),
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- dpo --model {input.model}"
        " --data {input.pairs} --out {output.checkpoint} --settings {params.settings:q} --if-empty keep"
        " --threads {threads} > {log} 2>&1"


rule sft:
    input:
        model=upstream("model"),
        data=training_data,
    output:
        checkpoint=directory(stage_output("sft")),
    params:
        data=training_data_path,
        settings=stage_settings,
        # data a stage wrote may come out empty (a weak teacher, no solved tree): the model is then
        # kept, logged; an empty given file (sft.actor_data) is an error
        if_empty=lambda wildcards: "keep" if "data" in PLAN.stage(wildcards.key).inputs else "error",
    log:
        stage_log("sft"),
    benchmark:
        stage_benchmark("sft")
    conda:
        stage_env("sft")
    threads: stage_threads("sft")
    resources:
        **stage_resources("sft"),
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- sft --model {input.model}"
        " --data {params.data:q} --out {output.checkpoint} --settings {params.settings:q}"
        " --if-empty {params.if_empty} --threads {threads} > {log} 2>&1"

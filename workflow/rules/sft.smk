# Initial SFT (optional, `sft.enabled`): M_0 and R_0 are the base model fine-tuned on the teacher's
# data (or given conversations, sft.data_source: files): SPaR's "-SFT" models, where its iterations start.


rule teacher_sft_data:
    input:
        unpack(stage_inputs),
    output:
        actor=stage_output("teacher_sft_data"),
        refiner=stage_output("teacher_sft_data", "refiner.jsonl"),
        answers=stage_output("teacher_sft_data", "answers.jsonl"),
        judged=stage_output("teacher_sft_data", "judged.jsonl"),
        refinements=stage_output("teacher_sft_data", "refinements.jsonl"),
        counts=stage_output("teacher_sft_data", "counts.json"),
        usage=stage_output("teacher_sft_data", "usage.json"),
    params:
        teacher=teacher_args,
        data=teacher_data_args,
    log:
        "logs/teacher_sft_data/{key}.log",
    benchmark:
        "logs/teacher_sft_data/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay teacher-sft-data --prompts {input.prompts} --samples {input.samples} {params.data} {params.teacher}"
        " --threads {threads} --actor {output.actor} --refiner {output.refiner} --answers {output.answers}"
        " --judged {output.judged} --refinements {output.refinements} --counts {output.counts} --usage {output.usage}"
        " > {log} 2>&1"


rule sft_model:
    input:
        model=upstream("model"),
        data=runtime("data"),
    output:
        checkpoint=directory(stage_output("sft_model")),
    params:
        settings=training_settings,
        # the teacher's data may come out empty (a weak teacher): M_0 is then the base model, logged;
        # an empty given file is an error
        if_empty=lambda wildcards: "keep" if "data" in PLAN.stage(wildcards.key).inputs else "error",
    log:
        "logs/sft_model/{key}.log",
    benchmark:
        "logs/sft_model/{key}.benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: THREADS["training"]
    resources:
        **RESOURCES["training"],
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- train-sft --model {input.model} --data {input.data} --out {output.checkpoint}"
        " --settings {params.settings:q} --if-empty {params.if_empty} --threads {threads} > {log} 2>&1"

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
        teacher=optional_input("teacher"),
        settings=stage_settings,
    log:
        stage_log("teacher_sft_data"),
    benchmark:
        stage_benchmark("teacher_sft_data")
    conda:
        stage_env("teacher_sft_data")
    threads: stage_threads("teacher_sft_data")
    resources:
        **stage_resources("teacher_sft_data"),
    shell:
        "ifplay teacher-sft-data --prompts {input.prompts} --samples {input.samples} {params.teacher}"
        " --actor {output.actor} --refiner {output.refiner} --answers {output.answers} --judged {output.judged}"
        " --refinements {output.refinements} --counts {output.counts} --usage {output.usage}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"

# Refinement accuracy (SPaR Tables 3, 10): ifplay.evaluation.refinement. The refinements are judged
# by the ordinary `judgements` rule (workflow/rules/shared.smk).


rule refinement_tasks:
    input:
        unpack(stage_inputs),
    output:
        tasks=stage_output("refinement_tasks"),
        prompts=stage_output("refinement_tasks", "prompts.jsonl"),
    params:
        settings=stage_settings,
    log:
        stage_log("refinement_tasks"),
    benchmark:
        stage_benchmark("refinement_tasks")
    conda:
        stage_env("refinement_tasks")
    threads: stage_threads("refinement_tasks")
    resources:
        **stage_resources("refinement_tasks"),
    shell:
        "ifplay refinement-tasks --judged {input.judged} --oracle {input.oracle} --prompts {input.prompts}"
        " --out {output.tasks} --prompts-out {output.prompts} --settings {params.settings:q} > {log} 2>&1"


rule refinements:
    input:
        unpack(stage_inputs),
    output:
        responses=stage_output("refinements"),
        trees=stage_output("refinements", "trees.jsonl"),
        counts=stage_output("refinements", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("refinements"),
    benchmark:
        stage_benchmark("refinements")
    conda:
        stage_env("refinements")
    threads: stage_threads("refinements")
    resources:
        **stage_resources("refinements"),
    shell:
        "ifplay refinements --tasks {input.tasks} --prompts {input.prompts} --refiner {input.refiner}"
        " --out {output.responses} --trees {output.trees} --counts {output.counts} --settings {params.settings:q}"
        " --threads {threads} > {log} 2>&1"


rule refinement_scores:
    input:
        unpack(stage_inputs),
    output:
        metrics=stage_output("refinement_scores"),
    log:
        stage_log("refinement_scores"),
    benchmark:
        stage_benchmark("refinement_scores")
    conda:
        stage_env("refinement_scores")
    threads: stage_threads("refinement_scores")
    resources:
        **stage_resources("refinement_scores"),
    shell:
        "ifplay refinement-scores --refined {input.refined} --judged {input.judged} --metrics {output.metrics} > {log} 2>&1"

# Inference-time scaling: the final actor's answers to IFEval prompts by best-of-N and by tree-search
# refinement, at each budget. Samples, judgements, greedy answers and scores reuse the stages of
# shared.smk and evaluation.smk (generate, judgements, ifeval_scores).


rule scaling_best_of_n:
    input:
        judged=upstream("judged"),
    output:
        responses=stage_output("scaling_best_of_n"),
        counts=stage_output("scaling_best_of_n", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("scaling_best_of_n"),
    benchmark:
        stage_benchmark("scaling_best_of_n")
    conda:
        stage_env("scaling_best_of_n")
    threads: stage_threads("scaling_best_of_n")
    resources:
        **stage_resources("scaling_best_of_n"),
    shell:
        "ifplay scaling-best-of-n --judged {input.judged} --out {output.responses} --counts {output.counts}"
        " --settings {params.settings:q} > {log} 2>&1"


rule scaling_search:
    input:
        prompts=upstream("prompts"),
        judged=upstream("judged"),
        refiner=upstream("refiner"),
    output:
        responses=stage_output("scaling_search"),
        trees=stage_output("scaling_search", "trees.jsonl"),
        counts=stage_output("scaling_search", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("scaling_search"),
    benchmark:
        stage_benchmark("scaling_search")
    conda:
        stage_env("scaling_search")
    threads: stage_threads("scaling_search")
    resources:
        **stage_resources("scaling_search"),
    shell:
        "ifplay scaling-search --prompts {input.prompts} --judged {input.judged} --refiner {input.refiner}"
        " --out {output.responses} --trees {output.trees} --counts {output.counts} --settings {params.settings:q}"
        " --threads {threads} > {log} 2>&1"

# Inference-time scaling: the final actor's answers to IFEval prompts by best-of-N and by tree-search
# refinement, at each budget. Samples, judgements, greedy answers and scores reuse the stages of
# spar.smk and evaluation.smk (spar_samples, spar_judged, eval_responses, ifeval_scores).


rule scaling_best_of_n:
    input:
        judged=upstream("judged"),
    output:
        responses=stage_output("scaling_best_of_n"),
        counts=stage_output("scaling_best_of_n", "counts.json"),
    params:
        budget=setting("budget"),
    log:
        "logs/scaling_best_of_n/{key}.log",
    benchmark:
        "logs/scaling_best_of_n/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay scaling-best-of-n --judged {input.judged} --budget {params.budget}"
        " --out {output.responses} --counts {output.counts} > {log} 2>&1"


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
        budget=setting("budget"),
        judge=judge_args,
        search=search_args,
        refine_template=runtime("refine_template"),
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
    log:
        "logs/scaling_search/{key}.log",
    benchmark:
        "logs/scaling_search/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay scaling-search --prompts {input.prompts} --judged {input.judged} --budget {params.budget}"
        " --out {output.responses} --trees {output.trees} --counts {output.counts} --refiner {input.refiner}"
        " --refine-template {params.refine_template:q} {params.search} {params.judge}"
        " --batch-size {params.batch_size} --max-prompt-tokens {params.max_prompt_tokens}"
        " --threads {threads} > {log} 2>&1"

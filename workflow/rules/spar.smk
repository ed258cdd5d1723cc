# SPaR iteration t: actor samples (generate) -> refiner judgements -> tree search -> data -> DPO(actor),
# RFT(refiner) (sft). Iterations chain through stage keys: M_{t+1} = dpo(M_t), R_{t+1} = sft(R_t).
# generate, judgements, dpo and sft are in shared.smk.


rule tree_search:
    input:
        prompts=upstream("prompts"),
        judged=upstream("judged"),
        refiner=upstream("refiner"),
    output:
        trees=stage_output("tree_search"),
        counts=stage_output("tree_search", "counts.json"),
    params:
        judge=judge_args,
        search=search_args,
        negatives=setting("negatives_per_prompt"),
        refine_template=runtime("refine_template"),
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
    log:
        stage_log("tree_search"),
    benchmark:
        stage_benchmark("tree_search")
    conda:
        stage_env("tree_search")
    threads: stage_threads("tree_search")
    resources:
        **stage_resources("tree_search"),
    shell:
        "ifplay tree-search --prompts {input.prompts} --judged {input.judged} --out {output.trees}"
        " --counts {output.counts} --refiner {input.refiner} --negatives-per-prompt {params.negatives}"
        " --refine-template {params.refine_template:q} {params.search} {params.judge}"
        " --batch-size {params.batch_size} --max-prompt-tokens {params.max_prompt_tokens}"
        " --threads {threads} > {log} 2>&1"


rule spar_data:
    input:
        judged=upstream("judged"),
        trees=upstream("trees"),
    output:
        pairs=stage_output("spar_data"),
        rft=stage_output("spar_data", "rft.jsonl"),
        counts=stage_output("spar_data", "counts.json"),
    params:
        rft_mix=lambda wildcards: json.dumps(PLAN.stage(wildcards.key).config["rft_mix"]),
        seed=setting("seed"),
        judge_template=runtime("judge_template"),
        refine_template=runtime("refine_template"),
    log:
        stage_log("spar_data"),
    benchmark:
        stage_benchmark("spar_data")
    conda:
        stage_env("spar_data")
    threads: stage_threads("spar_data")
    resources:
        **stage_resources("spar_data"),
    shell:
        "ifplay spar-data --judged {input.judged} --trees {input.trees}"
        " --judge-template {params.judge_template:q} --refine-template {params.refine_template:q}"
        " --rft-mix {params.rft_mix:q} --seed {params.seed} --pairs {output.pairs} --rft {output.rft}"
        " --counts {output.counts} > {log} 2>&1"

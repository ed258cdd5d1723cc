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
        settings=stage_settings,
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
        "ifplay tree-search --prompts {input.prompts} --judged {input.judged} --refiner {input.refiner}"
        " --out {output.trees} --counts {output.counts} --settings {params.settings:q}"
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
        settings=stage_settings,
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
        "ifplay spar-data --judged {input.judged} --trees {input.trees} --pairs {output.pairs} --rft {output.rft}"
        " --counts {output.counts} --settings {params.settings:q} > {log} 2>&1"

# SPaR's baselines (ifplay.baselines, docs/baselines.md). Self-Rewarding iteration t: M_t samples
# (generate) -> M_t scores its samples with the rubric -> best vs worst pairs -> DPO(M_t) (dpo).
# generate and dpo are in shared.smk: a stage the baselines share with SPaR runs once.


rule rubric_judgements:
    input:
        samples=upstream("samples"),
        judge=upstream("judge"),
    output:
        judged=stage_output("rubric_judgements"),
        counts=stage_output("rubric_judgements", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("rubric_judgements"),
    benchmark:
        stage_benchmark("rubric_judgements")
    conda:
        stage_env("rubric_judgements")
    threads: stage_threads("rubric_judgements")
    resources:
        **stage_resources("rubric_judgements"),
    shell:
        "ifplay rubric-judgements --responses {input.samples} --judge {input.judge} --out {output.judged}"
        " --counts {output.counts} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule self_rewarding_pairs:
    input:
        judged=upstream("judged"),
    output:
        pairs=stage_output("self_rewarding_pairs"),
        counts=stage_output("self_rewarding_pairs", "counts.json"),
    log:
        stage_log("self_rewarding_pairs"),
    benchmark:
        stage_benchmark("self_rewarding_pairs")
    conda:
        stage_env("self_rewarding_pairs")
    threads: stage_threads("self_rewarding_pairs")
    resources:
        **stage_resources("self_rewarding_pairs"),
    shell:
        "ifplay self-rewarding-pairs --judged {input.judged} --pairs {output.pairs} --counts {output.counts}"
        " > {log} 2>&1"


# Meta-Rewarding iteration t: M_t samples (generate) -> M_t scores them (rubric_judgements, as
# Self-Rewarding) -> M_t compares its judgements (meta_judgements; the iterations that train the
# judge) -> actor and judge pairs -> DPO(M_t) (dpo).
rule meta_judgements:
    input:
        judged=upstream("judged"),
        judge=upstream("judge"),
    output:
        verdicts=stage_output("meta_judgements"),
        counts=stage_output("meta_judgements", "counts.json"),
    params:
        settings=stage_settings,
    log:
        stage_log("meta_judgements"),
    benchmark:
        stage_benchmark("meta_judgements")
    conda:
        stage_env("meta_judgements")
    threads: stage_threads("meta_judgements")
    resources:
        **stage_resources("meta_judgements"),
    shell:
        "ifplay meta-judgements --judged {input.judged} --judge {input.judge} --out {output.verdicts}"
        " --counts {output.counts} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule meta_rewarding_pairs:
    input:
        unpack(stage_inputs),
    output:
        pairs=stage_output("meta_rewarding_pairs"),
        counts=stage_output("meta_rewarding_pairs", "counts.json"),
    params:
        settings=stage_settings,
        verdicts=optional_input("verdicts"),
    log:
        stage_log("meta_rewarding_pairs"),
    benchmark:
        stage_benchmark("meta_rewarding_pairs")
    conda:
        stage_env("meta_rewarding_pairs")
    threads: stage_threads("meta_rewarding_pairs")
    resources:
        **stage_resources("meta_rewarding_pairs"),
    shell:
        "ifplay meta-rewarding-pairs --judged {input.judged} {params.verdicts} --pairs {output.pairs}"
        " --counts {output.counts} --settings {params.settings:q} > {log} 2>&1"

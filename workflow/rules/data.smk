rule prompts:
    input:
        source=local_source,
    output:
        prompts=stage_output("prompts"),
    params:
        source=runtime("source"),
        limit=lambda wildcards: PLAN.stage(wildcards.key).config["limit"] or 0,
    log:
        "logs/prompts/{key}.log",
    benchmark:
        "logs/prompts/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay prepare-prompts --source {params.source:q} --limit {params.limit}"
        " --out {output.prompts} > {log} 2>&1"

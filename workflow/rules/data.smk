rule prompts:
    output:
        prompts=stage_output("prompts"),
    params:
        source=runtime("source"),
        limit=lambda wildcards: PLAN.stage(wildcards.key).config["limit"] or 0,
    log:
        stage_log("prompts"),
    benchmark:
        stage_benchmark("prompts")
    conda:
        stage_env("prompts")
    threads: stage_threads("prompts")
    resources:
        **stage_resources("prompts"),
    shell:
        "ifplay prompts --source {params.source:q} --limit {params.limit}"
        " --out {output.prompts} > {log} 2>&1"

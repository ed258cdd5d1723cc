rule prompts:
    output:
        prompts=stage_output("prompts"),
    params:
        settings=stage_settings,
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
        "ifplay prompts --settings {params.settings:q} --out {output.prompts} > {log} 2>&1"

rule base_model:
    output:
        checkpoint=directory(stage_output("base_model")),
    params:
        settings=stage_settings,
    log:
        stage_log("base_model"),
    benchmark:
        stage_benchmark("base_model")
    conda:
        stage_env("base_model")
    threads: stage_threads("base_model")
    resources:
        **stage_resources("base_model"),
    shell:
        "ifplay base-model --settings {params.settings:q} --out {output.checkpoint} > {log} 2>&1"

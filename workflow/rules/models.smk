rule base_model:
    output:
        checkpoint=directory(stage_output("base_model")),
    params:
        source=runtime("source"),
        revision=runtime("revision"),
        dtype=setting("dtype"),
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
        "ifplay base-model --source {params.source:q} --revision {params.revision:q}"
        " --dtype {params.dtype} --out {output.checkpoint} > {log} 2>&1"

rule base_model:
    output:
        checkpoint=directory(stage_output("base_model")),
    params:
        source=runtime("source"),
        revision=runtime("revision"),
        dtype=setting("dtype"),
    log:
        "logs/base_model/{key}.log",
    benchmark:
        "logs/base_model/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay prepare-model --source {params.source:q} --revision {params.revision:q}"
        " --dtype {params.dtype} --out {output.checkpoint} > {log} 2>&1"

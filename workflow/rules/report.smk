rule report:
    input:
        inputs=experiment_inputs,
    output:
        manifest="results/experiments/{experiment}/manifest.json",
        # names the plan reported: a changed plan asks for a new marker (rerun triggers are off)
        plan=f"results/experiments/{{experiment}}/plan-{PLAN.report_key()}.json",
        tables=report(
            expand("results/experiments/{{experiment}}/tables/{table}.csv", table=TABLES),
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            expand("results/experiments/{{experiment}}/figures/{figure}.png", figure=FIGURES),
            caption="../report/training_curves.rst",
            category="Training curves",
        ),
        result_figures=report(
            expand("results/experiments/{{experiment}}/figures/{figure}.png", figure=RESULT_FIGURES),
            caption="../report/inference_scaling.rst",
            category="Inference-time scaling",
        ),
    params:
        config=json.dumps(config, sort_keys=True),
        out_dir="results/experiments/{experiment}",
    log:
        "logs/report/{experiment}.log",
    benchmark:
        "logs/report/{experiment}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay report --config-json {params.config:q} --out-dir {params.out_dir} > {log} 2>&1"

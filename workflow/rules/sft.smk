# Initial SFT (optional, `sft.enabled`): M_0 and R_0 are the base model fine-tuned on given
# conversations (SPaR's "-SFT" models); the SPaR iterations then start from them.


rule sft_model:
    input:
        model=upstream("model"),
        data=runtime("data"),
    output:
        checkpoint=directory(stage_output("sft_model")),
    params:
        settings=training_settings,
    log:
        "logs/sft_model/{key}.log",
    benchmark:
        "logs/sft_model/{key}.benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: THREADS["training"]
    resources:
        **RESOURCES["training"],
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- train-sft --model {input.model} --data {input.data} --out {output.checkpoint}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"

# SPaR iteration t: actor samples -> refiner judgements -> tree search -> data -> DPO(actor), RFT(refiner).
# Iterations chain through stage keys: M_{t+1} = actor_dpo(M_t), R_{t+1} = refiner_rft(R_t).


rule spar_samples:
    input:
        model=upstream("model"),
        prompts=upstream("prompts"),
    output:
        samples=stage_output("spar_samples"),
    params:
        backend=setting("backend"),
        k=setting("sampling", "k"),
        temperature=setting("sampling", "temperature"),
        top_p=setting("sampling", "top_p"),
        max_new_tokens=setting("sampling", "max_new_tokens"),
        seed=setting("seed"),
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
        backend_options=runtime("backend_options"),
    log:
        "logs/spar_samples/{key}.log",
    benchmark:
        "logs/spar_samples/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay generate --model {input.model} --prompts {input.prompts} --out {output.samples}"
        " --backend {params.backend} --backend-options {params.backend_options:q}"
        " --n {params.k} --temperature {params.temperature} --top-p {params.top_p}"
        " --max-new-tokens {params.max_new_tokens} --seed {params.seed} --batch-size {params.batch_size}"
        " --max-prompt-tokens {params.max_prompt_tokens} --threads {threads} > {log} 2>&1"


rule spar_judged:
    input:
        unpack(spar_judge_inputs),
    output:
        judged=stage_output("spar_judged"),
    params:
        judge=judge_args,
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
    log:
        "logs/spar_judged/{key}.log",
    benchmark:
        "logs/spar_judged/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay spar-judge --prompts {input.prompts} --responses {input.samples} --out {output.judged}"
        " {params.judge} --batch-size {params.batch_size} --max-prompt-tokens {params.max_prompt_tokens}"
        " --threads {threads} > {log} 2>&1"


rule spar_trees:
    input:
        prompts=upstream("prompts"),
        judged=upstream("judged"),
        refiner=upstream("refiner"),
    output:
        trees=stage_output("spar_trees"),
        counts=stage_output("spar_trees", "counts.json"),
    params:
        judge=judge_args,
        search=search_args,
        negatives=setting("negatives_per_prompt"),
        refine_template=runtime("refine_template"),
        batch_size=runtime("batch_size"),
        max_prompt_tokens=runtime("max_prompt_tokens"),
    log:
        "logs/spar_trees/{key}.log",
    benchmark:
        "logs/spar_trees/{key}.benchmark.tsv"
    conda:
        "../../envs/generation.yaml"
    threads: THREADS["generation"]
    resources:
        **RESOURCES["generation"],
    shell:
        "ifplay spar-search --prompts {input.prompts} --judged {input.judged} --out {output.trees}"
        " --counts {output.counts} --refiner {input.refiner} --negatives-per-prompt {params.negatives}"
        " --refine-template {params.refine_template:q} {params.search} {params.judge}"
        " --batch-size {params.batch_size} --max-prompt-tokens {params.max_prompt_tokens}"
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
        rft_mix=lambda wildcards: json.dumps(PLAN.stage(wildcards.key).config["rft_mix"]),
        seed=setting("seed"),
        judge_template=runtime("judge_template"),
        refine_template=runtime("refine_template"),
    log:
        "logs/spar_data/{key}.log",
    benchmark:
        "logs/spar_data/{key}.benchmark.tsv"
    conda:
        "../../envs/bookkeeping.yaml"
    threads: THREADS["bookkeeping"]
    resources:
        **RESOURCES["bookkeeping"],
    shell:
        "ifplay spar-data --judged {input.judged} --trees {input.trees}"
        " --judge-template {params.judge_template:q} --refine-template {params.refine_template:q}"
        " --rft-mix {params.rft_mix:q} --seed {params.seed} --pairs {output.pairs} --rft {output.rft}"
        " --counts {output.counts} > {log} 2>&1"


rule actor_dpo:
    input:
        model=upstream("model"),
        pairs=upstream("data"),
    output:
        checkpoint=directory(stage_output("actor_dpo")),
    params:
        settings=training_settings,
    log:
        "logs/actor_dpo/{key}.log",
    benchmark:
        "logs/actor_dpo/{key}.benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: THREADS["training"]
    resources:
        **RESOURCES["training"],
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- train-dpo --model {input.model} --data {input.pairs} --out {output.checkpoint}"
        " --settings {params.settings:q} --if-empty keep --threads {threads} > {log} 2>&1"


rule refiner_rft:
    input:
        model=upstream("model"),
        data=upstream("data", "rft.jsonl"),
    output:
        checkpoint=directory(stage_output("refiner_rft")),
    params:
        settings=training_settings,
    log:
        "logs/refiner_rft/{key}.log",
    benchmark:
        "logs/refiner_rft/{key}.benchmark.tsv"
    conda:
        "../../envs/training.yaml"
    threads: THREADS["training"]
    resources:
        **RESOURCES["training"],
    shell:
        "ifplay launch --gpus {resources.gpu} --nodes {resources.nodes} -- train-sft --model {input.model} --data {input.data} --out {output.checkpoint}"
        " --settings {params.settings:q} --if-empty keep --threads {threads} > {log} 2>&1"

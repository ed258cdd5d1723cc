# Validation and the stage plan. Functions only (rules live in the other .smk files).
import json
import shlex
import sys

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # the ifplay package, if not installed

from snakemake.utils import validate

from ifplay.core.cluster import rule_resources, rule_threads
from ifplay.core.config import check_config
from ifplay.core.stages import GROUPS, STAGES
from ifplay.plan import Plan

# Readable errors (key path + schema rule) first, then Snakemake's own validation of the same schema.
check_config(config, source="config")
validate(config, schema="../schemas/config.schema.yaml")

PLAN = Plan(config)

# Rules run `ifplay` from the environment that runs Snakemake: `.venv/bin/snakemake` with nothing
# activated finds `.venv/bin/ifplay`. With --software-deployment-method conda a rule's own env
# (envs/<group>.yaml, which installs ifplay) is activated instead and must come first.
if not any(method.name == "CONDA" for method in workflow.deployment_settings.deployment_method):
    shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; ")
# Threads and cluster resources per rule group, from `resources.*` (workflow/ifplay/cluster.py).
THREADS = {group: rule_threads(config, group) for group in GROUPS}
RESOURCES = {group: rule_resources(config, group) for group in GROUPS}
FIGURES = list(PLAN.training_runs())
RESULT_FIGURES = PLAN.figures()
TABLES = PLAN.tables()


wildcard_constraints:
    key="[0-9a-f]{12}",
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",


# -- what every stage rule takes from its kind's declaration (ifplay.core.stages.STAGES) ----------
def stage_output(kind, name=None):
    """Output pattern of a stage kind: results/<kind>/{key}/<file> (a file its kind declares)."""
    spec = STAGES[kind]
    if name is not None and name not in spec.files:
        raise ValueError(f"stage kind {kind} declares no output {name} (outputs: {', '.join(spec.files)})")
    return f"results/{kind}/{{key}}/{name or spec.main}"


def stage_log(kind):
    return f"logs/{kind}/{{key}}.log"


def stage_benchmark(kind):
    return f"logs/{kind}/{{key}}.benchmark.tsv"


def stage_env(kind):
    """The conda env of the kind's rule group (paths are relative to workflow/rules/)."""
    return f"../../envs/{STAGES[kind].group}.yaml"


def stage_threads(kind):
    return THREADS[STAGES[kind].group]


def stage_resources(kind):
    return RESOURCES[STAGES[kind].group]


# The stage key is the re-run trigger: a stage re-runs when its output is missing, never because an
# input's modification time, a path or a runtime setting changed. So every upstream file is ancient()
# (its mtime is not compared) and profiles/default/config.yaml keeps only the mtime trigger, which
# ancient() then disarms; an upstream stage that does run still re-runs what depends on it.
def upstream(name):
    """Input function: the file this stage reads from the stage it consumes as `name` (that stage's
    main output, or the file the plan names in Stage.files)."""
    return lambda wildcards: ancient(PLAN.stage(wildcards.key).input_path(name))


def stage_settings(wildcards):
    """Params function: the stage's --settings, {"config": its hashed slice, "runtime": ...} as JSON
    (each command parses it into its settings dataclass: ifplay.core.settings)."""
    return json.dumps(PLAN.stage(wildcards.key).settings(), sort_keys=True)


def setting(*path):
    """Params function: a value of the stage's (hashed) config slice."""

    def lookup(wildcards):
        value = PLAN.stage(wildcards.key).config
        for part in path:
            value = value[part]
        return value

    return lookup


def runtime(name):
    """Params function: a runtime setting of the stage (not hashed: paths, batch sizes)."""
    return lambda wildcards: PLAN.stage(wildcards.key).runtime[name]


def experiment_inputs(wildcards):
    return PLAN.report_inputs()


def judge_args(wildcards):
    """Command-line flags of the judge a SPaR stage uses (judgements, tree-search)."""
    stage = PLAN.stage(wildcards.key)
    judge = stage.config["judge"]
    args = [f"--judge {judge['kind']}", f"--seed {stage.config['seed']}", f"--backend {stage.config['backend']}",
            f"--backend-options {shlex.quote(stage.runtime['backend_options'])}"]
    if judge["kind"] == "model":
        if "refiner" in stage.inputs and stage.kind in ("judgements", "judge_eval"):
            args.append(f"--refiner {stage.inputs['refiner'].output}")
        args += [f"--judge-template {stage.runtime['judge_template']}", f"--votes {judge['votes']}",
                 f"--judge-temperature {judge['temperature']}", f"--judge-top-p {judge['top_p']}",
                 f"--judge-max-new-tokens {judge['max_new_tokens']}", f"--tie-resamples {judge['tie_resamples']}"]
    elif "sandbox" in judge:  # the verifier judge runs AutoIF's verification functions
        args += [f"--verifier-timeout {judge['sandbox']['timeout']}",
                 f"--verifier-memory-mb {judge['sandbox']['memory_mb']}"]
    return " ".join(args)


def search_args(wildcards):
    """Command-line flags of the tree search (tree-search; scaling-search, whose budget is its own)."""
    search = PLAN.stage(wildcards.key).config["search"]
    flags = ("algorithm", "branch", "select", "max_depth", "budget", "end_gate", "selection", "temperature",
             "top_p", "max_new_tokens", "output_format")
    return " ".join(f"--{flag.replace('_', '-')} {search[flag]}" for flag in flags if flag in search)


def training_settings(wildcards):
    """trl settings of a training stage, as JSON."""
    stage = PLAN.stage(wildcards.key)
    return json.dumps({**stage.config["settings"], "seed": stage.config["seed"]})


def supervisor_args(section, n_key=None):
    """Command-line flags of an AutoIF supervisor call: backend, seed, batch settings and the decoding
    settings (temperature, top_p, max_new_tokens, and `n_key` as --n) of the stage's config[section]."""

    def lookup(wildcards):
        stage = PLAN.stage(wildcards.key)
        settings = stage.config[section]
        flags = [f"--backend {stage.config['backend']}",
                 f"--backend-options {shlex.quote(stage.runtime['backend_options'])}", f"--seed {stage.config['seed']}",
                 f"--batch-size {stage.runtime['batch_size']}",
                 f"--max-prompt-tokens {stage.runtime['max_prompt_tokens']}"]
        flags += [f"--{name.replace('_', '-')} {settings[name]}" for name in ("temperature", "top_p", "max_new_tokens")
                  if name in settings]
        if n_key:
            flags.append(f"--n {settings[n_key]}")
        if settings.get("stop"):
            flags.append(f"--stop {shlex.quote(json.dumps(settings['stop']))}")
        return " ".join(flags)

    return lookup


def sandbox_args(wildcards):
    """Limits of the verifier sandbox (autoif.sandbox) for a stage that runs model-written code."""
    sandbox = PLAN.stage(wildcards.key).config["sandbox"]
    return f"--timeout {sandbox['timeout']} --memory-mb {sandbox['memory_mb']}"


def stage_inputs(wildcards):
    """Every file a stage reads from its upstream stages, by input name (for unpack())."""
    stage = PLAN.stage(wildcards.key)
    return {name: ancient(stage.input_path(name)) for name in stage.inputs}


def training_data(wildcards):
    """The training file of an sft/dpo stage when an upstream stage wrote it; a given file
    (sft.actor_data) is no input: its content hash is in the key, so moving it re-runs nothing."""
    stage = PLAN.stage(wildcards.key)
    return ancient(stage.input_path("data")) if "data" in stage.inputs else []


def training_data_path(wildcards):
    stage = PLAN.stage(wildcards.key)
    return stage.input_path("data") if "data" in stage.inputs else stage.runtime["data"]


def augment_args(wildcards, input):
    """Flags of the instruction stage: no augmentation (seeds only), or the supervisor and its prompts."""
    stage = PLAN.stage(wildcards.key)
    augment = stage.config["augment"]
    if not augment:
        return "--rounds 0"
    return (f"--model {input.model} --template {shlex.quote(stage.runtime['template'])} --rounds {augment['rounds']}"
            f" --seeds-per-prompt {augment['seeds_per_prompt']} --ask {augment['ask']} "
            + supervisor_args("augment")(wildcards))


def teacher_args(wildcards, input):
    """--teacher: the teacher's checkpoint (an input stage), or the model name a server serves."""
    stage = PLAN.stage(wildcards.key)
    model = input.teacher if "teacher" in stage.inputs else stage.runtime["model"]
    return (f"--teacher {shlex.quote(str(model))} --backend {stage.runtime['backend']}"
            f" --backend-options {shlex.quote(stage.runtime['backend_options'])}"
            f" --batch-size {stage.runtime['batch_size']} --max-prompt-tokens {stage.runtime['max_prompt_tokens']}")


def teacher_data_args(wildcards):
    """Flags of the teacher's SFT data settings (sft.teacher_data), from the stage's hashed config."""
    stage = PLAN.stage(wildcards.key)
    cfg = stage.config
    answer, judge, refine = cfg["answer"], cfg["judge"], cfg["refine"]
    flags = [f"--actor-limit {cfg['actor_prompts'] or 0} --seed {cfg['seed']}",
             f"--temperature {answer['temperature']} --top-p {answer['top_p']} --max-new-tokens {answer['max_new_tokens']}",
             f"--judge-template {shlex.quote(stage.runtime['judge_template'])} --votes {judge['votes']}",
             f"--judge-temperature {judge['temperature']} --judge-top-p {judge['top_p']}",
             f"--judge-max-new-tokens {judge['max_new_tokens']} --tie-resamples {judge['tie_resamples']}",
             f"--refine-template {shlex.quote(stage.runtime['refine_template'])} --output-format {refine['output_format']}",
             f"--refine-temperature {refine['temperature']} --refine-top-p {refine['top_p']}",
             f"--refine-max-new-tokens {refine['max_new_tokens']}",
             "--verify-refinements" if cfg["verify_refinements"] else "--no-verify-refinements"]
    return " ".join(flags)


def evolution_args(wildcards):
    """Flags of the evolution settings (prompt_evolution), from the stage's hashed config."""
    stage = PLAN.stage(wildcards.key)
    cfg = stage.config["evolution"]
    flags = [f"--seeds {shlex.quote(stage.runtime['source'])}", f"--limit {cfg['limit'] or 0}",
             f"--template {shlex.quote(stage.runtime['template'])}",
             f"--min-others {cfg['others'][0]} --max-others {cfg['others'][1]}",
             f"--temperature {cfg['temperature']} --top-p {cfg['top_p']}",
             f"--max-new-tokens {cfg['max_new_tokens']} --seed {stage.config['seed']}"]
    if cfg["categories"]:
        flags.append(f"--taxonomy {shlex.quote(json.dumps(cfg['categories']))}")
    if cfg["stop"]:
        flags.append(f"--stop {shlex.quote(json.dumps(cfg['stop']))}")
    return " ".join(flags)

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
# Warm job starts for local runs: one process imports torch and transformers, and every job's
# `ifplay` is a fork of it (ifplay.core.warm; IFPLAY_WARM_START=0 turns it off; never under SLURM).
from ifplay.core import warm


onstart:
    warm.start_for_workflow(workflow)


onsuccess:
    warm.stop_for_workflow()


onerror:
    warm.stop_for_workflow()


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


def experiment_inputs(wildcards):
    return PLAN.report_inputs()


def optional_input(name):
    """Params function: the flag --NAME with the file of the stage's input `name` (judgements' refiner,
    the teacher's checkpoint), or nothing when the plan gives the stage no such input."""
    return lambda wildcards, input: f"--{name} {shlex.quote(str(input[name]))}" if name in input.keys() else ""


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

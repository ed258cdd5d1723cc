# Validation and the stage plan. Functions only (rules live in the other .smk files).
import json
import sys

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # the ifplay package, if not installed

from snakemake.utils import validate

from ifplay.config import check_config
from ifplay.plan import OUTPUTS, Plan

# Readable errors (key path + schema rule) first, then Snakemake's own validation of the same schema.
check_config(config, source="config")
validate(config, schema="../schemas/config.schema.yaml")

PLAN = Plan(config)
BENCHMARKS = list(dict.fromkeys(e.benchmark for e in PLAN.evaluations))


wildcard_constraints:
    key="[0-9a-f]{12}",
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",


def stage_output(kind, name=None):
    """Output pattern of a stage kind: results/<kind>/{key}/<file>."""
    return f"results/{kind}/{{key}}/{name or OUTPUTS[kind]}"


def upstream(name):
    """Input function: the output of the stage this stage consumes as `name`."""
    return lambda wildcards: PLAN.stage(wildcards.key).inputs[name].output


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


def local_source(wildcards):
    """The local file a prompts stage reads, so Snakemake tracks it; none for hub sources."""
    from ifplay.sources import prompt_origin

    origin = prompt_origin(PLAN.stage(wildcards.key).runtime["source"])
    return [origin.location] if origin.kind in ("file", "builtin") else []


def experiment_scores(wildcards):
    return [e.scores.output for e in PLAN.evaluations]

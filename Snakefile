# ifplay: instruction-following self-play experiments (SPaR, AutoIF) as one Snakemake workflow.
#
#   snakemake --cores all                                            # the default experiment
#   snakemake --cores all --configfile config/experiments/NAME.yaml  # an overlay experiment
#
# Every stage writes results/<stage>/<key>/, key = hash of the config the stage reads and of its
# inputs' keys (stage kinds: workflow/ifplay/core/stages.py; the plan: workflow/ifplay/plan.py), so experiments share every stage they agree on.
# Experiment manifests and tables: results/experiments/<experiment>/.

from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The default lives beside this Snakefile, so `snakemake -s PATH/Snakefile -d WORKDIR` works too.
configfile: Path(workflow.basedir) / "config" / "default.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/shared.smk"
include: "workflow/rules/evolution.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/spar.smk"
include: "workflow/rules/autoif.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/refinement.smk"
include: "workflow/rules/inference_scaling.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        PLAN.final_outputs(),
    default_target: True

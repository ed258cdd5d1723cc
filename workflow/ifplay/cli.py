"""``ifplay``: the one entry point the Snakemake rules (and researchers) call.

Each subcommand is one stage or tool with named files in and out; run ``ifplay SUBCOMMAND -h``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Literal

from ifplay.core.records import RecordError
from ifplay.core.settings import NoRuntime


# -- settings of the small stages (ifplay.core.settings; the big ones live beside their code) --------
@dataclass(frozen=True)
class BaseModelConfig:
    origin: dict  # the model's identity (builtin package, hub id and revision, or a directory's hash)
    dtype: Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class BaseModelRuntime:
    source: str  # builtin:NAME, a local model directory or a hub id (config model.base)
    revision: str


@dataclass(frozen=True)
class BaseModelSettings:
    config: BaseModelConfig
    runtime: BaseModelRuntime


@dataclass(frozen=True)
class PromptsConfig:
    origin: dict  # the prompt set's identity (hub id and revision, or the file's hash)
    limit: int | None  # the first N prompts; null = all


@dataclass(frozen=True)
class PromptsRuntime:
    source: str  # builtin:NAME, hf:ORG/NAME[@REV] or a JSONL path
    config_key: str  # the config key that names the source (for error messages)


@dataclass(frozen=True)
class PromptsSettings:
    config: PromptsConfig
    runtime: PromptsRuntime


@dataclass(frozen=True)
class SubsetConfig:
    limit: int | None  # the first N prompts; null = all


@dataclass(frozen=True)
class PromptSubsetSettings:
    config: SubsetConfig
    runtime: NoRuntime


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# -- subcommand implementations ---------------------------------------------------------------
def cmd_setup(args) -> None:
    from pathlib import Path

    from ifplay.core.config import ConfigError
    from ifplay.scoring.nltk_data import ensure_punkt_tab, install_stopwords

    print(f"punkt_tab: {ensure_punkt_tab()}")
    if args.stopwords_wheel:
        try:
            print(f"stopwords: {install_stopwords(Path(args.stopwords_wheel))}")
        except ValueError as err:
            raise ConfigError(f"--stopwords-wheel: {err}") from None


def cmd_base_model(args) -> None:
    from ifplay.generation.checkpoints import prepare_base_model

    runtime = args.settings.runtime
    print(prepare_base_model(runtime.source, runtime.revision, args.settings.config.dtype, args.out))


def cmd_prompts(args) -> None:
    from ifplay.core.records import write_jsonl
    from ifplay.core.sources import load_prompts

    runtime = args.settings.runtime
    records = load_prompts(runtime.source, args.settings.config.limit, config_key=runtime.config_key)
    n = write_jsonl(args.out, records)
    print(f"{n} prompts -> {args.out}")


def cmd_generate(args) -> None:
    from ifplay.generation.generate import generate_responses

    config, runtime = args.settings.config, args.settings.runtime
    records = generate_responses(args.model, args.prompts, args.out, config.backend, config.sampling.params(),
                                 batch_size=runtime.batch_size, max_prompt_tokens=runtime.max_prompt_tokens,
                                 threads=args.threads, backend_options=runtime.backend_options)
    print(f"{len(records)} responses -> {args.out}")


def cmd_prompt_subset(args) -> None:
    from ifplay.core.records import read_jsonl, write_jsonl

    prompts = read_jsonl(args.prompts, required=("key", "prompt"))
    limit = args.settings.config.limit
    subset = prompts if limit is None else prompts[:limit]
    write_jsonl(args.out, subset)
    print(f"{len(subset)} of {len(prompts)} prompts -> {args.out}")


def _score_prompt_set(args, benchmark: str) -> None:
    """``ifeval-scores`` / ``ifbench-scores``: the scorer module ``ifplay.scoring.<benchmark>`` on
    responses matched to IFEval-format prompts by prompt text."""
    import importlib

    from ifplay.core.records import read_jsonl, write_json, write_jsonl
    from ifplay.core.sources import PROMPT_FIELDS

    scorer = importlib.import_module(f"ifplay.scoring.{benchmark}")
    prompts = read_jsonl(args.prompts, required=PROMPT_FIELDS)
    responses = read_jsonl(args.responses, required=("prompt", "response"))
    result = scorer.score(prompts, scorer.match_responses(prompts, responses, source=args.responses))
    if args.metrics:
        write_json(args.metrics, result.to_json())
    if args.per_prompt:
        write_jsonl(args.per_prompt, result.per_prompt)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return
    unscorable = f"{result.num_unscorable} unscorable here, " if hasattr(result, "num_unscorable") else ""
    print(f"{'IFBench' if benchmark == 'ifbench' else 'IFEval'} on {result.num_prompts} prompts ({unscorable}"
          f"{result.num_empty_responses} empty responses), percent{' of the scorable' if unscorable else ''}:")
    for name, value in result.percent().items():
        print(f"  {name:<14} {value:6.2f}")


def cmd_ifeval_scores(args) -> None:
    _score_prompt_set(args, "ifeval")


def cmd_ifbench_scores(args) -> None:
    _score_prompt_set(args, "ifbench")


def cmd_report(args) -> None:
    from ifplay.core.config import check_config, load_config
    from ifplay.reporting.experiments import write_report

    if args.config_json:
        config = check_config(json.loads(args.config_json))
    else:
        config = load_config(args.configfile)
    manifest = write_report(config, args.out_dir)
    print(f"experiment {manifest['experiment']}: {len(manifest['stages'])} stages, tables {sorted(manifest['tables'])}")


def cmd_diff(args) -> None:
    from ifplay.reporting.experiments import diff, format_diff

    d = diff(args.a, args.b)
    print(json.dumps(d, indent=2) if args.json else format_diff(d), end="" if not args.json else "\n")


def cmd_plan(args) -> None:
    from ifplay.core.config import ConfigError, load_config
    from ifplay.plan import Plan

    plan = Plan(load_config(args.configfile))
    if args.settings:  # a kind (its first planned stage) or a stage key
        stage = next((s for s in plan.stages.values() if args.settings in (s.kind, s.key)), None)
        if stage is None:
            raise ConfigError(f"ifplay plan --settings {args.settings}: no planned stage of that kind or key")
        print(json.dumps(stage.settings(), sort_keys=True))
        return
    for stage in plan.stages.values():
        inputs = ", ".join(f"{k}={v}" for k, v in stage.describe()["inputs"].items())
        print(f"{stage.kind:<16} {stage.key}  {json.dumps(stage.config, sort_keys=True)[:100]}  [{inputs}]")


# -- argument parsing -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from ifplay.core import settings
    from ifplay.generation import journal
    from ifplay.generation.generate import GenerateSettings

    parser = argparse.ArgumentParser(prog="ifplay", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("setup", help="provision offline data (NLTK punkt_tab for the IFEval checkers, NLTK's "
                                     "English stop words for IFBench)")
    p.add_argument("--stopwords-wheel", default=None,
                   help="a downloaded llama-index-core 0.14.25 wheel, which carries NLTK's stopwords corpus")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("base-model", help="materialise the base model as a HF checkpoint directory")
    settings.add_argument(p, BaseModelSettings)
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.set_defaults(func=cmd_base_model)

    p = sub.add_parser("prompts", help="write a prompt set (IFEval format) as JSONL")
    settings.add_argument(p, PromptsSettings)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prompts)

    p = sub.add_parser("prompt-subset", help="the first N prompts of a prompt file (key, prompt)")
    p.add_argument("--prompts", required=True)
    settings.add_argument(p, PromptSubsetSettings)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prompt_subset)

    p = sub.add_parser("generate", help="generate chat completions for a prompt file (resumable)")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--prompts", required=True, help="JSONL with key and prompt")
    p.add_argument("--out", required=True, help="responses JSONL: key, sample, prompt, response")
    settings.add_argument(p, GenerateSettings)
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    p.set_defaults(func=cmd_generate)

    for name, what, func in (("ifeval-scores", "IFEval's four official metrics of responses (lm-eval's checkers)",
                              cmd_ifeval_scores),
                             ("ifbench-scores", "IFBench's strict and loose accuracies of responses (the official "
                              "checkers' verdicts; unscorable prompts counted)", cmd_ifbench_scores)):
        p = sub.add_parser(name, help=what)
        p.add_argument("--prompts", required=True, help="prompts JSONL: key, prompt, instruction_id_list, kwargs")
        p.add_argument("--responses", required=True, help="JSONL with prompt and response (matched by prompt text)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--metrics", help="write metrics JSON here")
        p.add_argument("--per-prompt", help="write per-prompt verdicts JSONL here")
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="write an experiment's manifest and tables")
    p.add_argument("--config-json", help="the resolved config as JSON (the Snakefile passes this)")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays on config/default.yaml")
    p.add_argument("--out-dir", help="default: results/experiments/NAME")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("diff", help="compare two experiments: config, metrics, shared stage outputs")
    p.add_argument("a", help="experiment name or directory")
    p.add_argument("b", help="experiment name or directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    from ifplay.autoif import stages as autoif_stages
    from ifplay.baselines import meta_rewarding, self_rewarding
    from ifplay.core import cluster, warm
    from ifplay.evaluation import followbench, general, inference_scaling, judge_eval, llmbar, refinement
    from ifplay.reporting import results_docs
    from ifplay.sandbox import runner as sandbox
    from ifplay.spar import evolution, teacher_data
    from ifplay.spar import stages as spar
    from ifplay.training import train as training

    for module in (spar, judge_eval, followbench, llmbar, refinement, general, training, cluster, sandbox, autoif_stages, inference_scaling, evolution,
                   teacher_data, results_docs, warm, self_rewarding, meta_rewarding):
        module.add_cli(sub)

    p = sub.add_parser("plan", help="list the stages (kind, key, config) a configuration runs")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays on config/default.yaml")
    p.add_argument("--settings", metavar="KIND|KEY",
                   help="print the --settings JSON of the first planned stage of this kind, or of the stage with this key")
    p.set_defaults(func=cmd_plan)
    return parser


def settings_class(command: str) -> type | None:
    """The settings dataclass a subcommand parses ``--settings`` into (None: it takes none)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].get_default("settings_class")


def main(argv: list[str] | None = None) -> int:
    """The ``ifplay`` command: in a job of a local workflow run, handed to the warm server (a fork that
    has imported torch and transformers: ifplay.core.warm); otherwise, or when it declines, run here."""
    if argv is None:
        from ifplay.core import warm

        code = warm.run_client(sys.argv[1:])
        if code is not None:
            return code
    return run(argv)


def run(argv: list[str] | None = None) -> int:
    """Parse ARGV (default: sys.argv) and run the subcommand in this process."""
    from ifplay.core.config import ConfigError
    from ifplay.evaluation.refinement import RefinementError
    from ifplay.scoring.followbench import FollowBenchScoringError
    from ifplay.scoring.ifeval import ScoringError
    from ifplay.sandbox.runner import SandboxError
    from ifplay.core.sources import SourceError

    from ifplay.core import settings
    from ifplay.generation import journal

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if getattr(args, "settings_class", None) is not None:
            args.settings, generation_log = settings.parse_stage(args.settings_class, settings.load(args.settings))
            journal.open_journal(generation_log)
        args.func(args)
    except (RecordError, ConfigError, SourceError, ScoringError, FollowBenchScoringError, RefinementError,
            SandboxError, settings.SettingsError) as err:
        print(f"ifplay {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

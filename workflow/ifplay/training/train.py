"""Training: actor DPO and refiner/actor SFT with TRL, from JSONL files to a plain HF checkpoint directory.

``train_dpo`` and ``train_sft`` run TRL's ``DPOTrainer`` / ``SFTTrainer`` unmodified, so the same call works on
CPU (the embedded default) and under ``accelerate launch`` (multi-GPU, DeepSpeed): every process runs the
function, only the main process writes the log, the plot and renames the output.

Data (JSONL, read with :func:`ifplay.core.records.read_jsonl`, so errors name file and line):

* DPO pairs, TRL's conversational preference format::

    {"prompt": [{"role": "user", "content": ...}],
     "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}], ...extra fields ignored}

  A pair whose chosen equals its rejected carries no preference and is dropped (counted in the summary).
* SFT conversations, TRL's conversational format: ``{"messages": [{"role": "user", ...},
  {"role": "assistant", ...}, ...]}`` (multi-turn allowed; extra fields ignored).

``settings`` uses TRL/transformers field names where they exist (see ``COMMON_KEYS``, ``DPO_KEYS``, ``SFT_KEYS``);
an unknown key is an error naming it. Mappings that are not one-to-one in trl 1.16 / transformers 5.19:

* ``max_length`` -- DPO: ``DPOConfig.max_length`` bounds prompt + completion together (trl 1.16 has no
  ``max_prompt_length`` / ``max_completion_length``); sequences are truncated keeping the start, and a pair whose
  prompt alone fills ``max_length`` is dropped by TRL (counted as ``dropped_too_long``). SFT: ``SFTConfig.max_length``.
* ``rpo_alpha`` -- trl 1.16 has no ``rpo_alpha`` field; the RPO / LLaMA-Factory ``pref_ftx`` term is TRL's
  ``loss_type=[<loss_type>, "sft"]`` with ``loss_weights=[1.0, rpo_alpha]``: the mean NLL of the chosen
  completion tokens, added with weight ``rpo_alpha`` (SPaR: 0.1). ``None`` (or 0) disables it.
* ``warmup_ratio`` -- transformers 5 removed ``warmup_ratio``; a ratio in [0, 1) is passed as ``warmup_steps``
  (which reads a float < 1 as a ratio of the total steps). ``warmup_steps`` (an integer count, AutoIF's 20) is
  accepted too; give one or the other.
* ``bf16`` -- defaults to ``False`` here (TRL defaults it to ``True``), so float32 CPU training is the default.
* ``gradient_checkpointing`` -- TRL's field and default (``True``); set ``False`` for small models on CPU (faster).
* ``lora`` -- ``{enabled, r, alpha, dropout, target_modules}`` -> ``peft.LoraConfig(r, lora_alpha, lora_dropout,
  target_modules)``; the adapter is merged into the base weights before saving (single process or DDP; merging
  a ZeRO-3-sharded adapter is not supported yet).

SFT trains on assistant tokens only. Where TRL's own mechanism applies -- the chat template has
``{% generation %}`` markers, or TRL ships a training variant of it (Llama 3, Qwen 2.5/3, Gemma, Phi-3, ...)
-- ``SFTConfig.assistant_only_loss=True`` is used. SmolLM2's ChatML template has no markers and no TRL variant
(TRL raises), so for such templates the assistant mask is computed here by rendering prefixes of the
conversation: the tokens of assistant message *i* are those between ``render(messages[:i],
add_generation_prompt=True)`` and ``render(messages[:i+1])`` (content plus end-of-turn token), which requires a
prefix-preserving template (checked; otherwise a clear error). The dataset is then handed to ``SFTTrainer``
pre-tokenized with ``input_ids`` and ``assistant_masks`` columns, from which TRL builds the labels (-100 outside
assistant turns) exactly as it does for its own masks, then truncates to ``max_length`` and drops examples left
without assistant tokens. On SmolLM2 both paths give identical masks (tests/test_training.py checks this against
a ``{% generation %}``-marked copy of the template). ``summary["assistant_mask"]`` says which path ran.

Fixed for every run: ``logging_steps=1``, ``report_to="none"``, ``save_strategy="no"`` (no intermediate
checkpoints). ``out`` is written atomically: training writes ``out + ".tmp"``, renamed onto ``out`` at the end. It
holds the model (safetensors) with tokenizer and chat template, ``training_log.csv`` (one row per optimizer step:
step, epoch, loss, learning_rate, for DPO rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
then every other logged metric), ``training_curves.png`` and ``training_summary.json`` (the returned summary plus
the settings).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifplay.core.config import ConfigError
from ifplay.core.records import RecordError, link_dir, read_jsonl, replace_dir
from ifplay.core.settings import NoRuntime

log = logging.getLogger(__name__)


class SettingsError(ConfigError):
    """A training settings dict names an unknown key or an invalid value (a ValueError)."""


COMMON_KEYS = frozenset({
    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "seed", "loss_type",
    "bf16", "lora", "max_steps", "gradient_checkpointing",
})
DPO_KEYS = COMMON_KEYS | {"beta", "rpo_alpha"}
SFT_KEYS = COMMON_KEYS
LORA_KEYS = frozenset({"enabled", "r", "alpha", "dropout", "target_modules"})
LORA_DEFAULTS = {"enabled": False, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}

# Keys copied verbatim onto the TRL config when present.
_DIRECT_KEYS = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                "max_length", "lr_scheduler_type", "weight_decay", "seed", "max_steps", "gradient_checkpointing",
                "beta")
DPO_LOG_COLUMNS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")
# Files transformers' Trainer writes beside the weights that a plain checkpoint does not need (a pickle).
_TRAINER_ARTIFACTS = ("training_args.bin",)


# -- settings --------------------------------------------------------------------------------
def check_settings(settings: dict | None, kind: str) -> dict:
    """Validate ``settings`` for ``kind`` ("dpo" or "sft"); returns a copy with ``lora`` filled with defaults."""
    allowed = DPO_KEYS if kind == "dpo" else SFT_KEYS
    settings = dict(settings or {})
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise SettingsError(f"train-{kind} settings: unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(sorted(allowed))}")
    lora = settings.get("lora") or {}
    if not isinstance(lora, dict):
        raise SettingsError(f"train-{kind} settings: 'lora' must be an object, got {type(lora).__name__}")
    unknown = sorted(set(lora) - LORA_KEYS)
    if unknown:
        raise SettingsError(f"train-{kind} settings: unknown key(s) {', '.join(f'lora.{k}' for k in unknown)}; "
                            f"allowed: {', '.join(f'lora.{k}' for k in sorted(LORA_KEYS))}")
    settings["lora"] = {**LORA_DEFAULTS, **lora}
    if settings.get("warmup_ratio") is not None and settings.get("warmup_steps") is not None:
        raise SettingsError(f"train-{kind} settings: give 'warmup_ratio' or 'warmup_steps', not both")
    ratio = settings.get("warmup_ratio")
    if ratio is not None and not 0 <= ratio < 1:
        raise SettingsError(f"train-{kind} settings: 'warmup_ratio' must be in [0, 1), got {ratio}")
    steps = settings.get("warmup_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise SettingsError(f"train-{kind} settings: 'warmup_steps' must be a non-negative integer, got {steps!r}")
    alpha = settings.get("rpo_alpha")
    if alpha is not None and (not isinstance(alpha, (int, float)) or alpha < 0):
        raise SettingsError(f"train-{kind} settings: 'rpo_alpha' must be a non-negative number or null, got {alpha!r}")
    loss_type = settings.get("loss_type")
    if alpha and loss_type is not None and "sft" in ([loss_type] if isinstance(loss_type, str) else loss_type):
        raise SettingsError(f"train-{kind} settings: 'rpo_alpha' adds the 'sft' loss; do not also list it in 'loss_type'")
    return settings


def _config_kwargs(settings: dict, kind: str, output_dir: str) -> dict:
    kwargs: dict[str, Any] = {key: settings[key] for key in _DIRECT_KEYS if settings.get(key) is not None}
    if "max_length" in settings and settings["max_length"] is None:
        kwargs["max_length"] = None  # TRL: no truncation
    kwargs["bf16"] = bool(settings.get("bf16", False))
    if settings.get("warmup_ratio") is not None:
        kwargs["warmup_steps"] = float(settings["warmup_ratio"])
    elif settings.get("warmup_steps") is not None:
        kwargs["warmup_steps"] = int(settings["warmup_steps"])
    if "seed" in kwargs:
        kwargs["data_seed"] = kwargs["seed"]
    if kind == "dpo":
        loss_type = settings.get("loss_type") or "sigmoid"
        loss_types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
        if settings.get("rpo_alpha"):  # None or 0: plain DPO
            kwargs["loss_type"] = loss_types + ["sft"]
            kwargs["loss_weights"] = [1.0] * len(loss_types) + [float(settings["rpo_alpha"])]
        else:
            kwargs["loss_type"] = loss_types
    elif settings.get("loss_type") is not None:
        kwargs["loss_type"] = settings["loss_type"]
    kwargs.update(
        output_dir=output_dir,
        logging_steps=1,
        logging_strategy="steps",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    return kwargs


def _lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(r=int(lora["r"]), lora_alpha=lora["alpha"], lora_dropout=float(lora["dropout"]),
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")


# -- data ------------------------------------------------------------------------------------
def _line_numbers(path: Path) -> list[int]:
    """File line numbers of the records ``read_jsonl`` returns (it skips blank lines)."""
    with path.open(encoding="utf-8") as handle:
        return [lineno for lineno, line in enumerate(handle, start=1) if line.strip()]


def _check_messages(value: Any, where: str, field: str, roles: set[str] | None = None) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RecordError(f"{where}: '{field}' must be a non-empty list of messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise RecordError(f"{where}: {field}[{i}] must be an object with string 'role' and 'content'")
        if roles is not None and message["role"] not in roles:
            raise RecordError(f"{where}: {field}[{i}] has role {message['role']!r}, expected one of {sorted(roles)}")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _read_records(data: str | os.PathLike, required: tuple[str, ...]) -> tuple[Path, list[dict], list[int]]:
    path = Path(data)
    records = read_jsonl(path, required=required)
    if not records:
        raise RecordError(f"{path}: no records (empty file)")
    return path, records, _line_numbers(path)


def load_dpo_pairs(data: str | os.PathLike) -> tuple[list[dict], int]:
    """Read and check preference pairs; returns (pairs with only prompt/chosen/rejected, number dropped as identical)."""
    path, records, lines = _read_records(data, ("prompt", "chosen", "rejected"))
    pairs, identical = [], 0
    for record, lineno in zip(records, lines):
        where = f"{path}:{lineno}"
        pair = {
            "prompt": _check_messages(record["prompt"], where, "prompt"),
            "chosen": _check_messages(record["chosen"], where, "chosen", {"assistant"}),
            "rejected": _check_messages(record["rejected"], where, "rejected", {"assistant"}),
        }
        if pair["prompt"][-1]["role"] == "assistant":
            raise RecordError(f"{where}: 'prompt' must not end with an assistant message")
        if pair["chosen"] == pair["rejected"]:
            identical += 1
            continue
        pairs.append(pair)
    if not pairs:
        raise RecordError(f"{path}: all {len(records)} pairs have chosen == rejected; nothing to train on")
    return pairs, identical


def load_sft_conversations(data: str | os.PathLike) -> list[tuple[str, list[dict]]]:
    """Read and check conversations; returns (``file:line``, messages) for each record."""
    path, records, lines = _read_records(data, ("messages",))
    conversations = []
    for record, lineno in zip(records, lines):
        where = f"{path}:{lineno}"
        messages = _check_messages(record["messages"], where, "messages", {"system", "user", "assistant"})
        if not any(m["role"] == "assistant" for m in messages):
            raise RecordError(f"{where}: 'messages' has no assistant message to train on")
        if messages[0]["role"] == "assistant":
            raise RecordError(f"{where}: 'messages' must not start with an assistant message")
        conversations.append((where, messages))
    return conversations


# -- assistant-only masks ----------------------------------------------------------------------
def assistant_mask_mechanism(tokenizer) -> str:
    """How SFT restricts the loss to assistant tokens for this tokenizer's chat template.

    ``"trl"``: TRL's ``assistant_only_loss`` (the template has ``{% generation %}`` markers or TRL ships a training
    variant of it). ``"prefix-render"``: masks computed here by rendering conversation prefixes.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template is None:
        raise ValueError("the tokenizer has no chat template; conversational SFT needs one")
    if isinstance(template, dict):
        template = template.get("default")
    if has_generation_markers(template):
        return "trl"
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return "prefix-render"
    return "trl"


def assistant_token_mask(tokenizer, messages: list[dict], where: str = "conversation") -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a 0/1 mask marking every assistant message's tokens.

    Assistant message ``i`` spans the characters between ``render(messages[:i], add_generation_prompt=True)`` and
    ``render(messages[:i+1])``: its content and end-of-turn token, not the role header. Token ids equal
    ``apply_chat_template(messages, tokenize=True)`` (the rendered text tokenized without extra special tokens).
    """
    def render(msgs, gen=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    text = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:i], gen=True), render(messages[: i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                f"{where}: the chat template is not prefix-preserving (rendering the conversation up to message {i} "
                "is not a prefix of the whole), so assistant tokens cannot be located; use a template with "
                "{% generation %} markers")
        spans.append((len(before), len(through)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(end > s and start < e for s, e in spans)) for start, end in encoded["offset_mapping"]]
    if not any(mask):
        raise ValueError(f"{where}: no assistant tokens found in the rendered conversation")
    return list(encoded["input_ids"]), mask


# -- outputs ---------------------------------------------------------------------------------
def _step_logs(log_history: list[dict]) -> list[dict]:
    return [entry for entry in log_history if "loss" in entry and "step" in entry]


def write_training_log(log_history: list[dict], path: Path, kind: str) -> list[dict]:
    """Write the per-step log as CSV: step, epoch, loss, learning_rate, the DPO reward columns, then the rest."""
    rows = _step_logs(log_history)
    head = ["step", "epoch", "loss", "learning_rate"] + (list(DPO_LOG_COLUMNS) if kind == "dpo" else [])
    extra = sorted({key for row in rows for key in row} - set(head))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=head + extra, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in head + extra})
    return rows


def plot_training_curves(rows: list[dict], path: Path, kind: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "training loss")]
    if kind == "dpo":
        panels.append(("rewards/margins", "reward margin (chosen - rejected)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o", markersize=3, linewidth=1.2)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if kind == "dpo" and key == "rewards/margins":
            ax.axhline(0.0, color="grey", linewidth=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _save_model(trainer, tmp: Path, lora: bool) -> None:
    """Save a plain checkpoint: the full model, or the base with the LoRA adapter merged in; plus the tokenizer."""
    if lora:
        model = trainer.accelerator.unwrap_model(trainer.model)
        merged = model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))  # gathers ZeRO-3/FSDP shards; saves the tokenizer too
    if trainer.accelerator.is_main_process:
        for name in _TRAINER_ARTIFACTS:
            (tmp / name).unlink(missing_ok=True)


def _finish(trainer, kind: str, out: Path, tmp: Path, settings: dict, summary: dict, started: float,
            title: str) -> dict:
    _save_model(trainer, tmp, lora=bool(settings["lora"]["enabled"]))
    rows = _step_logs(trainer.state.log_history)
    summary.update(
        steps=trainer.state.global_step,
        first_loss=rows[0]["loss"] if rows else None,
        final_loss=rows[-1]["loss"] if rows else None,
        seconds=round(time.time() - started, 2),
    )
    if kind == "dpo" and rows and "rewards/margins" in rows[-1]:
        summary["final_reward_margin"] = rows[-1]["rewards/margins"]
        summary["final_reward_accuracy"] = rows[-1].get("rewards/accuracies")
    if trainer.accelerator.is_main_process:
        write_training_log(trainer.state.log_history, tmp / "training_log.csv", kind)
        plot_training_curves(rows, tmp / "training_curves.png", kind, title)
        (tmp / "training_summary.json").write_text(
            json.dumps({**summary, "settings": settings}, indent=2, default=str) + "\n", encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        replace_dir(tmp, out)
    trainer.accelerator.wait_for_everyone()
    return summary


def _log_to_logger(trainer) -> None:
    """Send the per-step logs to ``logging`` (stderr) instead of the Trainer's print(), so stdout stays clean."""
    from transformers import PrinterCallback, TrainerCallback

    class LogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                shown = {k: round(v, 6) if isinstance(v, float) else v for k, v in logs.items()}
                log.info("step %d/%d: %s", state.global_step, state.max_steps, json.dumps(shown))

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogCallback())


def _prepare(out: str | os.PathLike, threads: int | None) -> tuple[Path, Path]:
    from accelerate import PartialState

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    state = PartialState()
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        tmp.parent.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    return out, tmp


def _load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# -- public API ------------------------------------------------------------------------------
def make_dpo_trainer(model: str, pairs: list[dict], settings: dict, output_dir: str | os.PathLike,
                     ref_model: str | None = None):
    """A ``DPOTrainer`` for checked pairs and settings (``check_settings(..., "dpo")``), writing to ``output_dir``."""
    from ifplay.core.hf import import_transformers

    import_transformers()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(**_config_kwargs(settings, "dpo", str(output_dir)))
    lora = settings["lora"]["enabled"]
    reference = AutoModelForCausalLM.from_pretrained(ref_model, dtype="float32") if ref_model else None
    return DPOTrainer(
        model=str(model), ref_model=reference, args=config, train_dataset=Dataset.from_list(pairs),
        processing_class=_load_tokenizer(model), peft_config=_lora_config(settings["lora"]) if lora else None,
    )


def _check_not_all_dropped(data: str, summary: dict, settings: dict) -> None:
    """TRL drops examples longer than ``max_length``; training on none of them is a config error."""
    if summary["num_examples"] == 0 and summary["dropped_too_long"] > 0:
        raise RecordError(f"{data}: all {summary['dropped_too_long']} examples are longer than max_length="
                          f"{settings['max_length']} tokens and were dropped; raise max_length in the training "
                          "settings (e.g. spar.actor_dpo.max_length / spar.refiner_rft.max_length)")


def train_dpo(model: str, data: str, out: str, settings: dict, ref_model: str | None = None,
              threads: int | None = None) -> dict:
    """DPO-train ``model`` on the preference pairs in ``data``; write a checkpoint directory to ``out``.

    ``ref_model``: the frozen reference (default: ``model`` itself; with LoRA, the base with the adapter disabled).
    Returns a summary: examples, drops, steps, first/final loss, seconds.
    """
    settings = check_settings(settings, "dpo")
    pairs, identical = load_dpo_pairs(data)
    started = time.time()
    out, tmp = _prepare(out, threads)
    trainer = make_dpo_trainer(model, pairs, settings, tmp, ref_model)
    _log_to_logger(trainer)
    config = trainer.args
    summary = {
        "kind": "dpo", "model": str(model), "ref_model": str(ref_model) if ref_model else None, "data": str(data),
        "out": str(out), "num_records": len(pairs) + identical, "dropped_identical": identical,
        "dropped_too_long": len(pairs) - len(trainer.train_dataset), "num_examples": len(trainer.train_dataset),
        "loss_type": list(config.loss_type), "loss_weights": config.loss_weights,
        "lora": bool(settings["lora"]["enabled"]),
    }
    log.info("DPO on %d pairs (%d identical dropped, %d too long) -> %s", summary["num_examples"], identical,
             summary["dropped_too_long"], out)
    _check_not_all_dropped(data, summary, settings)
    trainer.train()
    title = f"DPO: {Path(model).name} on {Path(data).name} ({summary['num_examples']} pairs)"
    return _finish(trainer, "dpo", out, tmp, settings, summary, started, title)


def build_sft_dataset(tokenizer, conversations: list[tuple[str, list[dict]]]):
    """The SFT dataset and the assistant-mask mechanism (see the module docstring)."""
    from datasets import Dataset

    mechanism = assistant_mask_mechanism(tokenizer)
    if mechanism == "trl":
        return Dataset.from_list([{"messages": messages} for _, messages in conversations]), mechanism
    rows = []
    for where, messages in conversations:
        input_ids, mask = assistant_token_mask(tokenizer, messages, where)
        rows.append({"input_ids": input_ids, "assistant_masks": mask})
    # The rendered text must tokenize as TRL would tokenize the conversation itself (checked once).
    where, messages = conversations[0]
    reference = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    if list(reference) != rows[0]["input_ids"]:
        raise ValueError(f"{where}: tokenizing the rendered chat differs from apply_chat_template(tokenize=True)")
    return Dataset.from_list(rows), mechanism


def make_sft_trainer(model: str, conversations: list[tuple[str, list[dict]]], settings: dict,
                     output_dir: str | os.PathLike):
    """An ``SFTTrainer`` (loss on assistant tokens only) and the assistant-mask mechanism used."""
    from ifplay.core.hf import import_transformers

    import_transformers()
    from trl import SFTConfig, SFTTrainer

    tokenizer = _load_tokenizer(model)
    dataset, mechanism = build_sft_dataset(tokenizer, conversations)
    kwargs = _config_kwargs(settings, "sft", str(output_dir))
    if mechanism == "trl":
        kwargs["assistant_only_loss"] = True
    lora = settings["lora"]["enabled"]
    trainer = SFTTrainer(
        model=str(model), args=SFTConfig(**kwargs), train_dataset=dataset, processing_class=tokenizer,
        peft_config=_lora_config(settings["lora"]) if lora else None,
    )
    return trainer, mechanism


def train_sft(model: str, data: str, out: str, settings: dict, threads: int | None = None) -> dict:
    """SFT ``model`` on the conversations in ``data`` (loss on assistant tokens only); write ``out``.

    Returns a summary: examples, steps, first/final loss, seconds, the assistant-mask mechanism.
    """
    settings = check_settings(settings, "sft")
    conversations = load_sft_conversations(data)
    started = time.time()
    out, tmp = _prepare(out, threads)
    trainer, mechanism = make_sft_trainer(model, conversations, settings, tmp)
    _log_to_logger(trainer)
    summary = {
        "kind": "sft", "model": str(model), "data": str(data), "out": str(out),
        "num_records": len(conversations), "num_examples": len(trainer.train_dataset),
        "dropped_too_long": len(conversations) - len(trainer.train_dataset), "assistant_mask": mechanism,
        "lora": bool(settings["lora"]["enabled"]),
    }
    log.info("SFT on %d conversations (assistant mask: %s) -> %s", summary["num_examples"], mechanism, out)
    _check_not_all_dropped(data, summary, settings)
    trainer.train()
    title = f"SFT: {Path(model).name} on {Path(data).name} ({summary['num_examples']} conversations)"
    return _finish(trainer, "sft", out, tmp, settings, summary, started, title)


# -- command line ----------------------------------------------------------------------------
# ``--settings`` of the dpo and sft stages. ``config.settings`` is the section's TRL settings, passed
# key for key and checked by check_settings (its keys: DPO_KEYS / SFT_KEYS); the experiment's seed
# joins them.
@dataclass(frozen=True)
class DpoConfig:
    settings: dict  # spar.actor_dpo / autoif.offline_dpo / autoif.online_dpo (check_settings)
    seed: int


@dataclass(frozen=True)
class SftConfig:
    settings: dict  # sft.training / spar.refiner_rft / autoif.sft (check_settings)
    seed: int
    data: dict  # {"file": NAME} of the upstream stage, or {"sha256": ...} of a given file (hashed identity)


@dataclass(frozen=True)
class GivenData:
    data: str  # the given training file (sft.actor_data); the rule passes it as --data too


@dataclass(frozen=True)
class DpoSettings:
    config: DpoConfig
    runtime: NoRuntime


@dataclass(frozen=True)
class SftSettings:
    config: SftConfig
    runtime: NoRuntime | GivenData


def _trl_settings(settings: DpoSettings | SftSettings) -> dict:
    return {**settings.config.settings, "seed": settings.config.seed}


def keep_input_model(model: str, out: str | os.PathLike, data: str) -> dict:
    """No training data: ``out`` becomes a link to ``model`` (M_{t+1} = M_t), said loudly in the summary."""
    link_dir(model, out)
    log.warning("%s has no training examples: %s is the input model unchanged", data, out)
    return {"num_records": 0, "trained": False, "kept_input_model": str(Path(model).resolve())}


def _empty(data: str) -> bool:
    return Path(data).is_file() and not any(line.strip() for line in Path(data).open(encoding="utf-8"))


def cmd_train_dpo(args) -> None:
    if args.if_empty == "keep" and _empty(args.data):
        summary = keep_input_model(args.model, args.out, args.data)
    else:
        summary = train_dpo(args.model, args.data, args.out, _trl_settings(args.settings), ref_model=args.ref_model,
                            threads=args.threads)
    print(json.dumps(summary, indent=2, default=str))


def cmd_train_sft(args) -> None:
    if args.if_empty == "keep" and _empty(args.data):
        summary = keep_input_model(args.model, args.out, args.data)
    else:
        summary = train_sft(args.model, args.data, args.out, _trl_settings(args.settings), threads=args.threads)
    print(json.dumps(summary, indent=2, default=str))


def add_cli(subparsers) -> None:
    """Register ``dpo`` and ``sft`` on an argparse subparsers object."""
    from ifplay.core import settings

    p = subparsers.add_parser("dpo", help="DPO-train a checkpoint on preference pairs (TRL)")
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id) to train")
    p.add_argument("--data", required=True, help="pairs JSONL: prompt, chosen, rejected (conversational)")
    p.add_argument("--out", required=True, help="output checkpoint directory (written atomically)")
    settings.add_argument(p, DpoSettings)
    p.add_argument("--ref-model", help="reference model directory (if not given: --model)")
    p.add_argument("--threads", type=int, required=True, help="torch CPU threads")
    p.add_argument("--if-empty", choices=["error", "keep"], required=True,
                   help="no pairs: fail, or keep the input model as the output")
    p.set_defaults(func=cmd_train_dpo)

    p = subparsers.add_parser("sft", help="SFT a checkpoint on conversations, assistant tokens only (TRL)")
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id) to train")
    p.add_argument("--data", required=True, help="conversations JSONL: messages")
    p.add_argument("--out", required=True, help="output checkpoint directory (written atomically)")
    settings.add_argument(p, SftSettings)
    p.add_argument("--threads", type=int, required=True, help="torch CPU threads")
    p.add_argument("--if-empty", choices=["error", "keep"], required=True,
                   help="no examples: fail, or keep the input model as the output")
    p.set_defaults(func=cmd_train_sft)

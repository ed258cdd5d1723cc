"""DPO and SFT training (TRL) on the real SmolLM2-135M-Instruct, on tiny data, in float32 on CPU."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest

from conftest import CORES
from ifplay.training import train as training
from ifplay.core import settings as settings_module
from ifplay.core.records import RecordError

pytestmark = pytest.mark.slow

TOPICS = ["the sea", "a cat", "autumn", "coffee", "the moon", "trains", "music", "rain"]
BASE = {"learning_rate": 5e-5, "per_device_train_batch_size": 2, "max_length": 256, "seed": 0,
        "gradient_checkpointing": False, "lr_scheduler_type": "constant", "bf16": False}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def lowercase_pairs() -> list[dict]:
    """Chosen follows "lowercase letters only"; rejected is the same sentence in title case."""
    pairs = []
    for i, topic in enumerate(TOPICS):
        sentence = f"{topic} is quiet and lovely in the evening."
        pairs.append({
            "prompt": [{"role": "user", "content": f"Write one sentence about {topic}, in lowercase letters only."}],
            "chosen": [{"role": "assistant", "content": sentence}],
            "rejected": [{"role": "assistant", "content": sentence.title()}],
            "id": i, "source": {"kind": "hand-made"},  # extra fields are ignored
        })
    return pairs


def conversations() -> list[dict]:
    convs = [{"messages": [{"role": "user", "content": f"Describe {topic} in three words."},
                           {"role": "assistant", "content": f"{topic}: calm, bright, kind."}]}
             for topic in TOPICS[:7]]
    convs.append({"messages": [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": "Name a colour."},
                               {"role": "assistant", "content": "blue."},
                               {"role": "user", "content": "Another one?"},
                               {"role": "assistant", "content": "green."}]})
    return convs


def assistant_texts(conv: dict) -> str:
    """What the loss should see of a conversation: each assistant content plus its end-of-turn."""
    return "".join(m["content"] + "<|im_end|>\n" for m in conv["messages"] if m["role"] == "assistant")


def read_log(out: Path) -> list[dict]:
    with (out / "training_log.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


# -- DPO, full fine-tune ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dpo_run(smollm2, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    pairs = lowercase_pairs()
    identical = {"prompt": [{"role": "user", "content": "Say hi."}],
                 "chosen": [{"role": "assistant", "content": "hi"}],
                 "rejected": [{"role": "assistant", "content": "hi"}]}
    data = write_jsonl(tmp / "pairs.jsonl", pairs[:4] + [identical] + pairs[4:])
    out = tmp / "actor"
    settings = {**BASE, "beta": 0.1, "num_train_epochs": 1, "rpo_alpha": None, "loss_type": "sigmoid",
                "warmup_ratio": 0.0, "weight_decay": 0.0, "max_steps": -1, "lora": {"enabled": False}}
    summary = training.train_dpo(str(smollm2), str(data), str(out), settings, threads=CORES)
    return summary, out, tmp


def test_dpo_summary_and_log(dpo_run):
    summary, out, _ = dpo_run
    assert summary["num_records"] == 9 and summary["dropped_identical"] == 1 and summary["num_examples"] == 8
    assert summary["steps"] == 4 and summary["loss_type"] == ["sigmoid"]
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # every step logged
    for row in rows:
        assert math.isfinite(float(row["loss"])) and float(row["learning_rate"]) > 0
        for column in training.DPO_LOG_COLUMNS:
            assert row[column] != ""
    # The first step has policy == reference: the sigmoid loss is exactly log 2, margins 0.
    assert float(rows[0]["loss"]) == pytest.approx(math.log(2), abs=1e-4)
    assert float(rows[-1]["rewards/margins"]) > 0  # the preference was learnt
    assert summary["final_loss"] == pytest.approx(float(rows[-1]["loss"]))
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 4


def test_dpo_changes_every_weight(dpo_run, smollm2):
    import torch

    _, out, _ = dpo_run
    before, after = weights(smollm2), weights(out)
    assert before.keys() == after.keys()
    unchanged = [name for name, tensor in before.items() if torch.equal(tensor, after[name])]
    assert not unchanged, f"parameters not updated: {unchanged}"


def test_dpo_output_is_a_loadable_checkpoint(dpo_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out, tmp = dpo_run
    assert not (tmp / "actor.tmp").exists()
    assert "<|im_start|>" in (out / "chat_template.jinja").read_text()
    assert not (out / "training_args.bin").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Write one sentence about tea."}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()


def test_dpo_curves_png(dpo_run):
    _, out, _ = dpo_run
    png = out / "training_curves.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# -- DPO, LoRA and RPO --------------------------------------------------------------------------------
def test_dpo_lora_is_merged_into_a_plain_checkpoint(smollm2, tmp_path):
    import torch

    data = write_jsonl(tmp_path / "pairs.jsonl", lowercase_pairs()[:2])
    out = tmp_path / "lora"
    lora = {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    summary = training.train_dpo(str(smollm2), str(data), str(out),
                                 {**BASE, "learning_rate": 1e-3, "max_steps": 1, "lora": lora}, threads=CORES)
    assert summary["lora"] and summary["steps"] == 1
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    assert not (tmp_path / "lora.tmp").exists()
    before, after = weights(smollm2), weights(out)
    assert before.keys() == after.keys()  # no lora_A/lora_B tensors, no base_model.model. prefix
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[q], after[q])  # the adapter was merged in
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(before[k], after[k])  # untargeted modules are the base
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert len(read_log(out)) == 1


def test_dpo_rpo_alpha_adds_the_sft_term(smollm2, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", lowercase_pairs()[:2])
    out = tmp_path / "rpo"
    summary = training.train_dpo(str(smollm2), str(data), str(out),
                                 {**BASE, "beta": 0.1, "rpo_alpha": 0.1, "max_steps": 1},
                                 ref_model=str(smollm2), threads=CORES)
    assert summary["loss_type"] == ["sigmoid", "sft"] and summary["loss_weights"] == [1.0, 0.1]
    rows = read_log(out)
    assert len(rows) == 1
    # Policy == reference at step 1, so the DPO part is log 2; the rest is 0.1 x the chosen NLL (> 0).
    extra = float(rows[0]["loss"]) - math.log(2)
    assert 0.01 < extra < 1.0


# -- SFT ------------------------------------------------------------------------------------------
def test_sft_overfits_and_saves(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "sft.jsonl", conversations()[-4:])  # 3 single-turn, 1 multi-turn
    out = tmp_path / "refiner"
    settings = {**BASE, "learning_rate": 1e-4, "per_device_train_batch_size": 4, "num_train_epochs": 3}
    summary = training.train_sft(str(smollm2), str(data), str(out), settings, threads=CORES)
    assert summary["assistant_mask"] == "prefix-render" and summary["num_examples"] == 4
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0], losses  # the same 4 conversations, one batch, every epoch
    assert not (tmp_path / "refiner.tmp").exists() and (out / "training_curves.png").stat().st_size > 10_000
    AutoModelForCausalLM.from_pretrained(out)


def test_sft_labels_cover_assistant_tokens_only(smollm2, tmp_path):
    """The trainer's collated batch: labels are -100 except on assistant contents and their end-of-turn."""
    convs = conversations()
    records = [(f"sft.jsonl:{i + 1}", c["messages"]) for i, c in enumerate(convs)]
    settings = training.check_settings({**BASE, "per_device_train_batch_size": 8}, "sft")
    trainer, mechanism = training.make_sft_trainer(str(smollm2), records, settings, tmp_path / "run")
    assert mechanism == "prefix-render"  # SmolLM2's template has no {% generation %} markers
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = trainer.processing_class
    seen = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        kept = [(i, l) for i, l in zip(ids, labels) if l != -100]
        assert all(i == l for i, l in kept)
        seen.append(tokenizer.decode([i for i, _ in kept]))
    assert sorted(seen) == sorted(assistant_texts(c) for c in convs)
    assert not any("user" in text or "SmolLM" in text for text in seen)


def test_prefix_render_masks_equal_generation_marker_masks(smollm2):
    """Our masks equal transformers' own {% generation %} masks on a marked copy of SmolLM2's template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    marked = marked_template(tokenizer.chat_template)
    for conv in conversations():
        ids, mask = training.assistant_token_mask(tokenizer, conv["messages"])
        native = tokenizer.apply_chat_template(conv["messages"], chat_template=marked, tokenize=True,
                                               return_dict=True, return_assistant_tokens_mask=True)
        assert native["input_ids"] == ids and native["assistant_masks"] == mask


def marked_template(template: str) -> str:
    turn = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    assert turn in template
    return template.replace(turn, (
        "{{'<|im_start|>' + message['role'] + '\n'}}{% if message['role'] == 'assistant' %}{% generation %}"
        "{{message['content'] + '<|im_end|>' + '\n'}}{% endgeneration %}{% else %}"
        "{{message['content'] + '<|im_end|>' + '\n'}}{% endif %}"))


def test_trl_assistant_only_loss_path_gives_the_same_labels(smollm2, tmp_path):
    """With a marked template TRL's own assistant_only_loss runs, and labels the same tokens."""
    marked_dir = tmp_path / "marked"
    marked_dir.mkdir()
    for item in smollm2.iterdir():
        if item.name != "chat_template.jinja":
            (marked_dir / item.name).symlink_to(item.resolve())
    (marked_dir / "chat_template.jinja").write_text(marked_template((smollm2 / "chat_template.jinja").read_text()))
    records = [(f"sft.jsonl:{i + 1}", c["messages"]) for i, c in enumerate(conversations())]
    settings = training.check_settings({**BASE, "per_device_train_batch_size": 8}, "sft")
    labels = {}
    for name, model in (("trl", marked_dir), ("prefix-render", smollm2)):
        trainer, mechanism = training.make_sft_trainer(str(model), records, settings, tmp_path / name)
        assert mechanism == name
        labels[name] = sorted(trainer.train_dataset["labels"])
        assert trainer.train_dataset.num_rows == 8
    assert labels["trl"] == labels["prefix-render"]


# -- errors and CLI -------------------------------------------------------------------------------
def test_unknown_settings_key_is_named(smollm2, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", lowercase_pairs()[:2])
    with pytest.raises(ValueError, match="'betta'"):
        training.train_dpo(str(smollm2), str(data), str(tmp_path / "o"), {"betta": 0.1})
    with pytest.raises(ValueError, match="'beta'"):  # a DPO setting is not an SFT setting
        training.train_sft(str(smollm2), str(data), str(tmp_path / "o"), {"beta": 0.1})
    with pytest.raises(ValueError, match="lora.rank"):
        training.check_settings({"lora": {"enabled": True, "rank": 8}}, "dpo")
    with pytest.raises(ValueError, match="warmup_ratio"):
        training.check_settings({"warmup_ratio": 0.1, "warmup_steps": 20}, "sft")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.tmp").exists()


def test_malformed_data_names_file_and_line(smollm2, tmp_path):
    good = lowercase_pairs()[0]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(good) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(RecordError, match=f"{bad_json}:3"):
        training.train_dpo(str(smollm2), str(bad_json), str(tmp_path / "o"), {})
    bad_shape = write_jsonl(tmp_path / "shape.jsonl", [good, {**good, "chosen": "not a message list"}])
    with pytest.raises(RecordError, match=f"{bad_shape}:2: 'chosen'"):
        training.train_dpo(str(smollm2), str(bad_shape), str(tmp_path / "o"), {})
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"messages": good["prompt"]}])
    with pytest.raises(RecordError, match=f"{missing}:1: 'messages' has no assistant"):
        training.train_sft(str(smollm2), str(missing), str(tmp_path / "o"), {})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(RecordError, match=f"{empty}: no records"):
        training.train_sft(str(smollm2), str(empty), str(tmp_path / "o"), {})
    same = write_jsonl(tmp_path / "same.jsonl", [{**good, "rejected": good["chosen"]}])
    with pytest.raises(RecordError, match="chosen == rejected"):
        training.train_dpo(str(smollm2), str(same), str(tmp_path / "o"), {})


def test_every_example_too_long_is_a_named_error(smollm2, tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", conversations()[:2])
    with pytest.raises(RecordError, match=f"{data}: all 2 examples are longer than max_length=16"):
        training.train_sft(str(smollm2), str(data), str(tmp_path / "o"), {"max_length": 16})
    assert not (tmp_path / "o").exists()


def test_cli_registers_both_subcommands():
    from conftest import planned_settings
    from ifplay.cli import main

    parser = argparse.ArgumentParser(prog="ifplay")
    training.add_cli(parser.add_subparsers(dest="command", required=True))
    dpo = planned_settings("dpo", config={"settings": {"beta": 0.2}})
    args = parser.parse_args(["dpo", "--model", "m", "--data", "d.jsonl", "--out", "o", "--settings", dpo,
                              "--ref-model", "r", "--threads", "2", "--if-empty", "error"])
    assert args.func is training.cmd_train_dpo and args.settings_class is training.DpoSettings
    assert args.ref_model == "r" and args.threads == 2
    args = parser.parse_args(["sft", "--model", "m", "--data", "d.jsonl", "--out", "o", "--settings", "{}",
                              "--threads", "1", "--if-empty", "keep"])
    assert args.func is training.cmd_train_sft and args.settings_class is training.SftSettings
    with pytest.raises(SystemExit):  # --threads and --if-empty have no defaults
        parser.parse_args(["sft", "--model", "m", "--data", "d", "--out", "o", "--settings", "{}"])
    settings = settings_module.parse(training.DpoSettings, json.loads(dpo))
    assert training._trl_settings(settings)["beta"] == 0.2 and training._trl_settings(settings)["seed"] == 0
    # a typo in a TRL key is refused by the training's own check, naming the key
    bad = planned_settings("dpo", config={"settings": {"betta": 0.2}})
    with pytest.raises(training.SettingsError, match="unknown key.*'betta'"):
        training.check_settings(training._trl_settings(settings_module.parse(training.DpoSettings, json.loads(bad))),
                                "dpo")
    assert main(["sft", "--model", "m", "--data", "d", "--out", "o", "--threads", "1", "--if-empty", "keep",
                 "--settings", "[1, 2]"]) == 2


def test_empty_data_keeps_input_model_when_asked(tmp_path, smollm2):
    from conftest import run

    empty = tmp_path / "pairs.jsonl"
    empty.write_text("")
    out = tmp_path / "actor"
    from conftest import planned_settings

    cmd = ["ifplay", "dpo", "--model", str(smollm2), "--data", str(empty), "--out", str(out),
           "--settings", planned_settings("dpo"), "--threads", "1"]
    proc = run(cmd + ["--if-empty", "error"], check=False)
    assert proc.returncode == 2 and "no records (empty file)" in proc.stderr
    summary = json.loads(run(cmd + ["--if-empty", "keep"]).stdout)
    assert summary["trained"] is False and out.resolve() == smollm2.resolve()

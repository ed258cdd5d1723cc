"""The transformers backend on the real SmolLM2-135M-Instruct checkpoint."""

import pytest

from conftest import CORES
from ifplay.generation.backends import SamplingParams, make_backend

pytestmark = pytest.mark.slow

PROMPTS = [
    "Name three colours.",
    "Write one sentence about the sea, in lowercase letters only, and end it with the word 'waves'.",
    "What is 2 + 2?",
]


@pytest.fixture(scope="module")
def backend(smollm2):
    with make_backend("transformers", str(smollm2), batch_size=8, threads=CORES) as engine:
        yield engine


def chat(backend, prompts, **params):
    return backend.chat([[{"role": "user", "content": p}] for p in prompts], SamplingParams(**params))


def test_checkpoint_is_plain_safetensors(smollm2):
    assert (smollm2 / "model.safetensors").is_file()
    assert (smollm2 / "tokenizer.json").is_file()
    assert "<|im_start|>" in (smollm2 / "chat_template.jinja").read_text()


def test_greedy_answers_are_real_and_deterministic(backend):
    first = chat(backend, PROMPTS, max_new_tokens=24)
    assert first == chat(backend, PROMPTS, max_new_tokens=24)
    assert all(len(out) == 1 and out[0].strip() for out in first)
    assert "4" in first[2][0]


def test_left_padding_batch_equals_single(backend):
    batched = chat(backend, PROMPTS, max_new_tokens=16)
    single = [chat(backend, [p], max_new_tokens=16)[0] for p in PROMPTS]
    assert batched == single


def test_n_samples_seeded(backend):
    a = chat(backend, PROMPTS[:2], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    b = chat(backend, PROMPTS[:2], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    c = chat(backend, PROMPTS[:2], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=2)
    assert a == b and a != c
    assert all(len(out) == 3 for out in a)
    assert len(set(a[0])) > 1  # samples differ from one another


def test_shared_prefill_samples_continue_the_right_prompt(backend):
    """n samples share one prefill of their (left-padded) prompt: near-zero temperature must give
    every copy the greedy answer of its own prompt."""
    greedy = chat(backend, PROMPTS, max_new_tokens=12)
    cold = chat(backend, PROMPTS, temperature=1e-4, n=3, max_new_tokens=12)
    assert cold == [g * 3 for g in greedy]
    prefilled = backend.chat([[{"role": "user", "content": PROMPTS[1]}, {"role": "assistant", "content": "the sea"}]],
                             SamplingParams(temperature=1e-4, n=2, max_new_tokens=8))
    assert prefilled[0][0] == prefilled[0][1]


def test_max_new_tokens_bounds_length(backend):
    out = chat(backend, ["Tell me a very long story about a dragon."], max_new_tokens=8)[0][0]
    assert len(backend.tokenizer(out, add_special_tokens=False)["input_ids"]) <= 8


def test_generation_stage_resumes(tmp_path, smollm2):
    import json

    from ifplay.generation.generate import generate_responses
    from ifplay.core.records import Checkpoint, write_jsonl

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"key": i, "prompt": p} for i, p in enumerate(PROMPTS)])
    out = tmp_path / "responses.jsonl"
    # a previous run finished prompt 1 before it was killed
    Checkpoint(out, id_field="key").append([{"key": 1, "sample": 0, "prompt": PROMPTS[1], "response": "FROM BEFORE"}])
    records = generate_responses(str(smollm2), str(prompts), str(out), "transformers",
                                 SamplingParams(max_new_tokens=8), batch_size=2)
    assert [r["key"] for r in records] == [0, 1, 2]
    assert records[1]["response"] == "FROM BEFORE"
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == [0, 1, 2]
    assert not (tmp_path / "responses.jsonl.partial").exists()


def test_assistant_prefill_is_continued(backend):
    conversation = [{"role": "user", "content": "Is the sky blue? Answer yes or no."},
                    {"role": "assistant", "content": "Final Judgement:"}]
    rendered = backend.render(conversation)
    assert rendered.endswith("<|im_start|>assistant\nFinal Judgement:")
    [[completion]] = backend.chat([conversation], SamplingParams(max_new_tokens=4))
    assert not completion.startswith("Final Judgement")  # only the continuation comes back


def test_stop_strings_end_completions_before_the_stop(backend):
    prompts = ["Write three short lines about the sea, one per line.", "List four fruits, one per line."]
    free = chat(backend, prompts, max_new_tokens=48)
    stopped = chat(backend, prompts, max_new_tokens=48, stop=("\n",))
    for full, cut in zip(free, stopped):
        assert "\n" not in cut[0]
        assert full[0].startswith(cut[0])  # greedy: the same text, cut at the first newline
    assert any("\n" in full[0] for full in free)


def test_stop_must_be_strings():
    assert SamplingParams(stop=["a"]).stop == ("a",)
    assert SamplingParams(stop=("]}",)).cut('{"a": [1]} tail') == '{"a": [1'
    with pytest.raises(ValueError, match="stop"):
        SamplingParams(stop="\n")

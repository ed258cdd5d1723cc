"""The vllm backend on the real SmolLM2-135M-Instruct checkpoint, with vLLM's real (CPU) engine.

vLLM's pins conflict with the main environment, so this module runs under ``.venv-vllm``'s
interpreter (``make venv-vllm``; ``make test`` runs ``.venv-vllm/bin/python -m pytest`` on it after
the main suite). Under any interpreter without vllm it is skipped. It runs in the same process as
the engine so that a failure shows vLLM's own traceback; the engine starts once per module.
"""

import logging

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: run under .venv-vllm (make venv-vllm; make test does)")

from ifplay.generation.backends import SamplingParams, make_backend  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = [
    "Name three colours.",
    "Write one sentence about the sea, in lowercase letters only, and end it with the word 'waves'.",
    "What is 2 + 2?",
]


@pytest.fixture(scope="module")
def engine(smollm2):
    # float32 as the transformers backend decodes (vLLM's CPU build would pick bfloat16)
    options = {"max_model_len": 2048, "dtype": "float32", "enforce_eager": True}  # eager: starts in ~25 s, not ~80 s
    with make_backend("vllm", str(smollm2), max_prompt_tokens=2048, options=options) as backend:
        yield backend


def chat(backend, prompts, **params):
    return backend.chat([[{"role": "user", "content": p}] for p in prompts], SamplingParams(**params))


def test_make_backend_passes_engine_settings(engine):
    assert engine.name == "vllm" and engine.max_model_len == 2048


def test_greedy_answers_are_real_and_deterministic(engine):
    first = chat(engine, PROMPTS, max_new_tokens=24)
    assert first == chat(engine, PROMPTS, max_new_tokens=24)
    assert all(len(out) == 1 and out[0].strip() for out in first)
    assert "4" in first[2][0]
    assert chat(engine, PROMPTS, max_new_tokens=24, n=2) == [out * 2 for out in first]  # greedy repeats


def test_n_samples_follow_the_call_seed(engine):
    a = chat(engine, PROMPTS[:2], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    chat(engine, PROMPTS, temperature=1.0, max_new_tokens=8, seed=5)  # another call in between
    b = chat(engine, PROMPTS[:2], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    c = chat(engine, PROMPTS[:2], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=2)
    alone = chat(engine, PROMPTS[:1], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    swapped = chat(engine, PROMPTS[1::-1], temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    twice = chat(engine, PROMPTS[:1] * 2, temperature=0.9, top_p=0.9, n=3, max_new_tokens=16, seed=1)
    assert all(len(out) == 3 for out in a)
    assert len(set(a[0])) > 1  # samples differ from one another
    assert a == b, "the same seed must give the same samples (seeded requests)"
    assert alone == a[:1] and swapped == a[::-1], "a request's samples must not depend on the rest of the batch"
    assert twice[0] == a[0] and twice[1] != a[0]  # a repeated conversation draws anew
    assert a != c


def test_stop_strings_end_completions_before_the_stop(engine):
    prompts = ["Write three short lines about the sea, one per line.", "List four fruits, one per line."]
    free = chat(engine, prompts, max_new_tokens=48)
    stopped = chat(engine, prompts, max_new_tokens=48, stop=("\n",))
    for full, cut in zip(free, stopped):
        assert "\n" not in cut[0]
        assert full[0].startswith(cut[0])
    assert any("\n" in full[0] for full in free)


def test_assistant_prefill_is_continued(engine):
    conversation = [{"role": "user", "content": "Is the sky blue? Answer yes or no."},
                    {"role": "assistant", "content": "Final Judgement:"}]
    assert engine.render(conversation).endswith("<|im_start|>assistant\nFinal Judgement:")
    [[completion]] = engine.chat([conversation], SamplingParams(max_new_tokens=4))
    assert completion.strip() and not completion.startswith("Final Judgement")


def test_prefill_continues_the_greedy_answer(engine):
    """Prefilling the first words of the greedy answer gives back the rest of it."""
    [[answer]] = chat(engine, [PROMPTS[0]], max_new_tokens=32)
    words = answer.split(" ")
    assert len(words) > 4
    head = " ".join(words[:3])
    [[rest]] = engine.chat([[{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": head}]],
                           SamplingParams(max_new_tokens=32 - 8))
    assert answer.startswith(head + rest[:20]), (answer, head, rest)


def test_long_prompts_are_cut_from_the_left_with_a_warning(engine, caplog, monkeypatch):
    monkeypatch.setattr(engine, "max_prompt_tokens", 64)
    long_prompt = "Repeat after me. " + "the quick brown fox jumps over the lazy dog " * 60
    with caplog.at_level(logging.WARNING, logger="ifplay.generation.backends.vllm_backend"):
        [[out], [short]] = chat(engine, [long_prompt, "Hi"], max_new_tokens=8)
    assert "1 prompt(s) longer than 64 tokens are cut from the left" in caplog.text
    assert short.strip()


def test_greedy_agrees_with_the_transformers_backend(engine, smollm2):
    """Both backends render the same tokens; greedy float32 decoding agrees on short answers.
    Kernels differ (vLLM's CPU attention vs PyTorch's SDPA), so a near-tie between two tokens may
    flip late in a long answer; the first 16 tokens must agree on every prompt."""
    from ifplay.generation.backends.transformers_backend import TransformersBackend

    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=16)
    with TransformersBackend(str(smollm2), batch_size=1) as reference:
        assert [reference.render(c) for c in conversations] == [engine.render(c) for c in conversations]
        expected = reference.chat(conversations, params)
    assert engine.chat(conversations, params) == expected

"""The continuous batcher (ifplay.generation.backends.batching) on a tiny random Llama: the real
transformers model code with 2 layers, so the scheduling logic is checked against ``generate``."""

import pytest
import torch

from ifplay.generation.backends.batching import ContinuousBatcher, Request, row_seed

EOS = 1


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=EOS, pad_token_id=0, bos_token_id=2)
    return LlamaForCausalLM(config).eval()


def prompts(count=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 30, (count,), generator=generator).tolist()
    return [torch.randint(3, 97, (n,), generator=generator).tolist() for n in lengths]


def run(model, ids_list, samples=1, max_rows=4, eos=(EOS,), **kwargs):
    params = dict(temperature=0.0, top_p=1.0, max_new_tokens=12, seed=0) | kwargs
    requests = [Request(ids, samples, occurrence=0) for ids in ids_list]
    with torch.inference_mode():
        ContinuousBatcher(model, set(eos), max_rows=max_rows, prefill_tokens=64).run(requests, **params)
    return requests


def reference_greedy(model, ids, max_new_tokens, eos=(EOS,)):
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=list(eos), pad_token_id=0)
    new = out[0, len(ids):].tolist()
    ends = [i for i, token in enumerate(new) if token in eos]
    return new[:ends[0]] if ends else new


def test_greedy_equals_generate_one_prompt_at_a_time(model):
    """More prompts than rows: rows end, leave their slots and later prompts are prefilled into them
    (several prefill groups, the cache grows); every answer is what generate() gives the prompt alone."""
    ids_list = prompts(11)
    requests = run(model, ids_list, max_rows=3, max_new_tokens=20, eos=(EOS, 5, 7))
    for request, ids in zip(requests, ids_list):
        expected = reference_greedy(model, ids, 20, eos=(EOS, 5, 7))
        assert request.outputs[0] == expected
        ended = len(expected) < 20
        assert request.ended == [ended] and request.generated() == [len(expected) + ended]
    assert any(r.ended[0] for r in requests) and any(not r.ended[0] for r in requests)


def test_greedy_does_not_depend_on_rows_or_order(model):
    ids_list = prompts(8)
    a = [r.outputs for r in run(model, ids_list, max_rows=2)]
    b = [r.outputs for r in run(model, ids_list, max_rows=16)]
    c = [r.outputs for r in run(model, ids_list[::-1], max_rows=5)][::-1]
    assert a == b == c


def test_slot_attention_decodes_the_same_tokens(model):
    """The grouped-query decoding path (query heads folded onto their KV head) against transformers'
    SDPA with repeated KV heads: the same greedy tokens and samples."""
    import copy

    from ifplay.generation.backends.batching import SLOT_ATTENTION, use_slot_attention

    folded = copy.deepcopy(model)
    assert use_slot_attention(folded) and folded.config._attn_implementation == SLOT_ATTENTION
    assert not use_slot_attention(folded)  # only an SDPA model is switched
    ids_list = prompts(7)
    for params in (dict(max_new_tokens=16), dict(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=5)):
        expected = [r.outputs for r in run(model, ids_list, samples=2, max_rows=5, **params)]
        assert [r.outputs for r in run(folded, ids_list, samples=2, max_rows=5, **params)] == expected
    assert run(folded, ids_list[:1], max_new_tokens=16)[0].outputs[0] == reference_greedy(model, ids_list[0], 16)


def test_samples_depend_only_on_their_prompt_and_seed(model):
    ids_list = prompts(6)
    sampled = dict(temperature=1.0, top_p=0.9, max_new_tokens=10)
    a = [r.outputs for r in run(model, ids_list, samples=3, max_rows=4, seed=3, **sampled)]
    b = [r.outputs for r in run(model, ids_list[::-1], samples=3, max_rows=9, seed=3, **sampled)][::-1]
    alone = run(model, ids_list[2:3], samples=3, max_rows=3, seed=3, **sampled)[0].outputs
    other_seed = [r.outputs for r in run(model, ids_list, samples=3, max_rows=4, seed=4, **sampled)]
    assert a == b and a[2] == alone
    assert a != other_seed
    assert any(len({tuple(s) for s in samples}) > 1 for samples in a)  # the 3 samples of a prompt differ


def test_a_request_with_more_samples_than_rows_still_runs(model):
    [request] = run(model, prompts(1), samples=5, max_rows=2, temperature=1.0, max_new_tokens=6)
    assert len(request.outputs) == 5


def test_stop_check_ends_a_row_after_the_token_that_completes_the_stop(model):
    ids_list = prompts(4)
    free = run(model, ids_list, max_new_tokens=12, eos=())
    stopped = run(model, ids_list, max_new_tokens=12, eos=(), stop_check=lambda ids: len(ids) >= 3 and ids[-1] % 2 == 0)
    for f, s in zip(free, stopped):
        assert f.outputs[0][:len(s.outputs[0])] == s.outputs[0]
        cut = next((i + 1 for i, t in enumerate(f.outputs[0]) if i >= 2 and t % 2 == 0), 12)
        assert len(s.outputs[0]) == cut and s.ended == [False]


def test_sampling_is_the_inverse_cdf_of_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    # top_p 0.8: nucleus {0: .5, 1: .3} of row 0 (mass .8), {3, 2, 1} of row 1 (.4 + .3 = .7 < .8 -> add .2)
    draw = lambda u: ContinuousBatcher.sample(logits, 1.0, 0.8, torch.tensor(u, dtype=torch.float64)).tolist()
    assert draw([0.0, 0.0]) == [0, 3]
    assert draw([0.6, 0.5]) == [0, 2]  # row 0: .6 * .8 = .48 < .5; row 1: .5 * .9 = .45 in (.4, .7]
    assert draw([0.7, 0.99]) == [1, 1]
    assert ContinuousBatcher.sample(logits, 0.0, 0.8, torch.zeros(2)).tolist() == [0, 3]  # greedy
    # a nucleus larger than the top 64 tokens falls back to the full distribution
    flat = torch.zeros(1, 200)
    picks = {ContinuousBatcher.sample(flat, 1.0, 0.99, torch.tensor([u])).item() for u in (0.0, 0.5, 0.98)}
    assert len(picks) == 3 and max(picks) >= 64


def test_row_seeds_tell_prompts_occurrences_and_samples_apart():
    seeds = {row_seed(0, [1, 2], o, s) for o in range(2) for s in range(3)} | {row_seed(1, [1, 2], 0, 0),
                                                                                   row_seed(0, [1, 3], 0, 0)}
    assert len(seeds) == 8 and all(0 <= s < 2 ** 63 for s in seeds)

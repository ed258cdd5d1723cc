"""Continuous batching for a Hugging Face causal LM on its own KV cache (the transformers backend).

``model.generate`` on a padded batch decodes every row until the batch's longest answer ends, grows
its KV cache by concatenation (copying the whole cache at every step) and samples all rows from one
random stream, so a row's sample depends on its batch-mates. :class:`ContinuousBatcher` instead:

- keeps up to ``max_rows`` rows in flight in a preallocated KV cache (:class:`SlotCache`, one slot
  per row, written in place): a row that ends (end-of-sequence, a stop string, ``max_new_tokens``)
  leaves its slot at once and the next waiting prompt is prefilled into it, so no step decodes a
  finished row and no row waits for a longer one;
- prefills each prompt once (waiting prompts in groups of similar length, longest first, capped at
  ``prefill_tokens`` padded tokens a forward pass) and copies its KV into the slots of its ``n``
  samples (SPaR's votes and samples share one prefill);
- computes logits only for the last position of a prefill;
- samples each row from its own random stream, seeded from the call's seed, the prompt's token ids,
  the prompt's occurrence in the call and the sample's index (:func:`row_seed`): a sample depends on
  its own prompt and seed only, not on the other prompts of the call, their order or the batch size
  (up to floating-point differences of batched arithmetic);
- applies top-p exactly, on the top 64 tokens when their mass reaches ``top_p`` (almost always) and
  on the full sorted distribution otherwise.

One decoding step runs the model on one token per row, with per-row positions and a boolean mask of
each row's own cache length; attention reads the slots' first ``max(length)`` positions. The
model's attention layers call ``past_key_values.update(key, value, layer_idx)``, which is the whole
interface a :class:`SlotCache` implements (Llama, Qwen2, Mistral and the other decoder-only models of
transformers 5 that take a 4-D boolean ``attention_mask`` as given).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import torch

TOP_K_FIRST = 64  # top-p is tried on the top 64 tokens first (exact whenever they hold top_p of the mass)
SLOT_ATTENTION = "ifplay_slots"  # the attention implementation use_slot_attention() registers


def slot_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, except for a decoding step (one query position) of a model with
    grouped-query attention: there the query heads of a KV head are folded into the query axis, so
    SDPA reads each KV head once instead of transformers' ``repeat_kv`` copying the whole cache
    ``num_attention_heads / num_key_value_heads`` times at every step. Same arithmetic otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    groups = heads // key.shape[1]
    if length != 1 or groups == 1 or attention_mask is None or attention_mask.dim() != 4 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    folded = query.reshape(batch, key.shape[1], groups, dim)  # query head h reads KV head h // groups
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def use_slot_attention(model) -> bool:
    """Switch a model that uses SDPA attention to :func:`slot_attention` (its masks stay SDPA's);
    False (nothing changed) for any other attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(SLOT_ATTENTION, slot_attention)
    AttentionMaskInterface.register(SLOT_ATTENTION, sdpa_mask)
    model.set_attn_implementation(SLOT_ATTENTION)
    return True


def row_seed(call_seed: int, prompt_ids: list[int], occurrence: int, sample: int) -> int:
    """The seed of one sample's random stream: a hash of the call's seed, the prompt's token ids, the
    prompt's occurrence in the call and the sample's index (below 2**63)."""
    digest = hashlib.sha256(json.dumps([call_seed, occurrence, sample, prompt_ids]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Request:
    """One prompt of a call: its token ids and how many samples (rows) it asks for."""

    prompt_ids: list[int]
    samples: int
    occurrence: int = 0
    outputs: list[list[int]] = field(default_factory=list)  # token ids per sample (no end-of-sequence token)
    ended: list[bool] = field(default_factory=list)  # per sample: ended on an end-of-sequence token

    def generated(self) -> list[int]:
        """Tokens each sample decoded, its end-of-sequence token included (as vLLM counts them)."""
        return [len(ids) + eos for ids, eos in zip(self.outputs, self.ended)]


class SlotCache:
    """A preallocated KV cache: per layer, keys and values of shape ``[slots, kv_heads, capacity,
    head_dim]``. Row ``r`` of the current batch lives in slot ``r`` (the batch is always the first
    ``rows`` slots) and holds ``lengths[r]`` positions. During a decoding step ``update`` writes the
    step's key and value at each row's own position and returns the first ``span`` positions of the
    batch's slots."""

    def __init__(self, layers: int, slots: int, kv_heads: int, head_dim: int, capacity: int, dtype, device):
        shape = (slots, kv_heads, capacity, head_dim)
        # zeros, not empty: masked positions are multiplied by 0 in attention, and 0 * NaN is NaN
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.capacity = capacity
        self.rows = 0
        self.positions = None  # [rows] write position of the current step
        self.span = 0

    def grow(self, capacity: int) -> None:
        """At least ``capacity`` positions per slot (the existing contents are kept)."""
        if capacity <= self.capacity:
            return
        capacity = max(capacity, int(self.capacity * 1.5))
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, :self.capacity] = old
                store[i] = new
        self.capacity = capacity

    def put(self, slot: int, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """A prefilled prompt's ``[kv_heads, length, head_dim]`` keys and values into ``slot``."""
        self.keys[layer][slot, :, :key.shape[1]] = key
        self.values[layer][slot, :, :value.shape[1]] = value

    def move(self, source: int, target: int, length: int) -> None:
        for store in (self.keys, self.values):
            for tensor in store:
                tensor[target, :, :length] = tensor[source, :, :length]

    # -- the interface the model's attention layers call -----------------------------------------
    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        rows = torch.arange(self.rows, device=self.positions.device)
        self.keys[layer_idx][rows, :, self.positions] = key_states[:, :, 0]
        self.values[layer_idx][rows, :, self.positions] = value_states[:, :, 0]
        return (self.keys[layer_idx][:self.rows, :, :self.span], self.values[layer_idx][:self.rows, :, :self.span])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.span - 1


class ContinuousBatcher:
    """Generates for many :class:`Request` s with up to ``max_rows`` rows in flight (module docstring).

    ``stop_check(ids) -> bool`` ends a row early (stop strings); ``on_done(request)`` is called as each
    request's last sample ends (progress bars)."""

    def __init__(self, model, eos_ids: set[int], max_rows: int = 64, prefill_tokens: int = 4096):
        self.model = model
        self.eos_ids = set(eos_ids)
        self.max_rows = max_rows
        self.prefill_tokens = prefill_tokens
        config = model.config
        self.layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.pad_id = 0

    # -- sampling ---------------------------------------------------------------------------------
    @staticmethod
    def sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
        """The next token of each row: argmax when ``temperature == 0``; else the inverse CDF, at the
        row's uniform draw, of the softmax at ``temperature`` restricted to the top-p nucleus (the
        smallest set of most likely tokens whose mass reaches ``top_p``; ties by token id)."""
        if temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        out = torch.empty(probs.shape[0], dtype=torch.long, device=logits.device)
        k = min(TOP_K_FIRST, probs.shape[-1])
        top_probs, top_ids = probs.topk(k, dim=-1, sorted=True)
        enough = top_probs.sum(-1) >= top_p if top_p < 1 else torch.zeros(probs.shape[0], dtype=torch.bool, device=logits.device)
        for rows, top in ((enough, True), (~enough, False)):
            if not rows.any():
                continue
            if top:
                p, ids = top_probs[rows], top_ids[rows]
            else:  # the nucleus needs more than the top k: the full sorted distribution
                p, ids = probs[rows].sort(dim=-1, descending=True, stable=True)
            cumulative = p.cumsum(-1)
            # keep a token when the mass before it is below top_p (the first token always)
            keep = (cumulative - p) < top_p
            p = p * keep
            cumulative = p.cumsum(-1)
            target = uniforms[rows].to(cumulative.dtype) * cumulative[:, -1]
            index = torch.searchsorted(cumulative, target.unsqueeze(-1), right=True).clamp(max=p.shape[-1] - 1)
            out[rows] = ids.gather(-1, index).squeeze(-1)
        return out

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, requests: list[Request], *, temperature: float, top_p: float, max_new_tokens: int, seed: int,
            stop_check=None, on_done=None) -> None:
        torch_, device = torch, self.device
        for request in requests:
            request.outputs = [[] for _ in range(request.samples)]
            request.ended = [False] * request.samples
        # waiting prompts, longest first (ties: input order): similar lengths prefill together
        waiting = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prompt_ids), i))
        waiting.reverse()  # pop() takes the longest
        longest = max((len(r.prompt_ids) for r in requests), default=0)
        slots = max(self.max_rows, max((r.samples for r in requests), default=1))
        cache = SlotCache(self.layers, slots, self.kv_heads, self.head_dim,
                          min(longest, 64) + max_new_tokens + 1, self.dtype, device)
        # per row: request index, sample index, cache length, tokens generated, last token, uniforms
        owner: list[tuple[int, int]] = []
        lengths: list[int] = []
        last = torch_.zeros(slots, dtype=torch_.long, device=device)
        uniforms = torch_.zeros(slots, max_new_tokens, dtype=torch_.float64, device=device)
        remaining = [r.samples for r in requests]

        def finish(row: int) -> None:
            i, _ = owner[row]
            remaining[i] -= 1
            if remaining[i] == 0 and on_done is not None:
                on_done(requests[i])

        def admit() -> None:
            """Prefill waiting prompts into free slots (whole requests: all their samples at once), in
            groups of at most ``prefill_tokens`` padded tokens."""
            while waiting:
                group, free = [], slots - len(owner)
                while waiting and requests[waiting[-1]].samples <= free:
                    width = len(requests[group[0] if group else waiting[-1]].prompt_ids)  # the group's longest
                    if group and (len(group) + 1) * width > self.prefill_tokens:
                        break
                    free -= requests[waiting[-1]].samples
                    group.append(waiting.pop())
                if not group:
                    return
                self._prefill(group, requests, cache, owner, lengths, last, uniforms, temperature, top_p,
                              max_new_tokens, seed, stop_check, finish)

        def worth_admitting() -> bool:
            """Refill once an eighth of the slots (or what the next prompt needs, or all that waits) is free:
            prefills then come in groups rather than one prompt per ended row."""
            need = requests[waiting[-1]].samples
            pending = sum(requests[i].samples for i in waiting)
            return slots - len(owner) >= max(need, min(slots // 8, pending))

        admit()
        while owner:
            rows = len(owner)
            cache.rows = rows
            positions = torch_.tensor(lengths, dtype=torch_.long, device=device)
            cache.positions = positions
            cache.span = int(positions.max()) + 1
            if cache.span > cache.capacity:
                cache.grow(cache.span)
            mask = (torch_.arange(cache.span, device=device).unsqueeze(0) <= positions.unsqueeze(1))[:, None, None, :]
            logits = self.model(input_ids=last[:rows].unsqueeze(1), position_ids=positions.unsqueeze(1),
                                attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
            steps = torch_.tensor([len(requests[i].outputs[s]) for i, s in owner], dtype=torch_.long, device=device)
            draws = uniforms[torch_.arange(rows, device=device), steps]
            tokens = self.sample(logits, temperature, top_p, draws).tolist()
            for row in range(rows):
                lengths[row] += 1
            self._accept(list(range(rows)), tokens, requests, cache, owner, lengths, last, uniforms, max_new_tokens,
                         stop_check, finish)
            if waiting and worth_admitting():
                admit()

    def _append(self, requests, row_owner, token: int, max_new_tokens: int, stop_check) -> bool:
        """Add ``token`` to the row's sample; True when the sample has ended."""
        i, s = row_owner
        ids = requests[i].outputs[s]
        if token in self.eos_ids:
            requests[i].ended[s] = True
            return True
        ids.append(token)
        return len(ids) >= max_new_tokens or (stop_check is not None and stop_check(ids))

    def _accept(self, slots, tokens, requests, cache, owner, lengths, last, uniforms, max_new_tokens, stop_check,
                finish) -> None:
        """Each slot's new token: appended to its sample (and fed to the next step), or the sample ends
        and the slot is released."""
        done = []
        for slot, token in zip(slots, tokens):
            if self._append(requests, owner[slot], token, max_new_tokens, stop_check):
                done.append(slot)
            else:
                last[slot] = token
        if done:
            self._release(done, cache, owner, lengths, last, uniforms, finish)

    def _release(self, done, cache, owner, lengths, last, uniforms, finish) -> None:
        """Free the slots of ended rows, keeping the batch in the first slots (the last rows move in)."""
        for row in done:
            finish(row)
        gone = set(done)
        keep = len(owner) - len(done)
        holes = [row for row in sorted(gone) if row < keep]
        movers = [row for row in range(keep, len(owner)) if row not in gone]
        for hole, mover in zip(holes, movers):
            cache.move(mover, hole, lengths[mover])
            owner[hole], lengths[hole] = owner[mover], lengths[mover]
            last[hole] = last[mover]
            uniforms[hole] = uniforms[mover]
        del owner[keep:], lengths[keep:]

    def _prefill(self, group, requests, cache, owner, lengths, last, uniforms, temperature, top_p,
                 max_new_tokens, seed, stop_check, finish) -> None:
        """Encode the prompts of ``group`` (left-padded, one forward pass), copy each prompt's KV into
        the slots of its samples and sample every sample's first token."""
        from transformers import DynamicCache

        width = max(len(requests[i].prompt_ids) for i in group)
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(group), width), dtype=torch.long)
        for j, i in enumerate(group):
            prompt = requests[i].prompt_ids
            ids[j, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[j, width - len(prompt):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        ids, attention, positions = ids.to(self.device), attention.to(self.device), positions.to(self.device)
        kv = DynamicCache()
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=kv,
                            use_cache=True, logits_to_keep=1).logits[:, -1]
        cache.grow(width + max_new_tokens + 1)
        layer_kv = [(layer.keys, layer.values) for layer in kv.layers]
        rows_logits, rows_uniforms, new_rows = [], [], []
        for j, i in enumerate(group):
            request = requests[i]
            length = len(request.prompt_ids)
            for s in range(request.samples):
                slot = len(owner)
                for layer, (keys, values) in enumerate(layer_kv):
                    cache.put(slot, layer, keys[j, :, width - length:], values[j, :, width - length:])
                owner.append((i, s))
                lengths.append(length)
                generator = torch.Generator().manual_seed(row_seed(seed, request.prompt_ids, request.occurrence, s))
                uniforms[slot] = torch.rand(max_new_tokens, generator=generator, dtype=torch.float64).to(self.device)
                rows_logits.append(j)
                new_rows.append(slot)
        first = self.sample(logits[rows_logits], temperature, top_p, uniforms[new_rows, 0])
        self._accept(new_rows, first.tolist(), requests, cache, owner, lengths, last, uniforms, max_new_tokens,
                     stop_check, finish)

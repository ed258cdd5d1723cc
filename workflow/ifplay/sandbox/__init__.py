"""The verifier sandbox that runs model-written Python."""

"""SPaR: sampling, judging, tree-search refinement, training data, prompt evolution, teacher data."""

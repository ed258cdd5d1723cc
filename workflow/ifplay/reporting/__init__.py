"""Experiment manifests, tables, figures and diffs."""

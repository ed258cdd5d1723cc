"""The workflow's bones: config, stage plan records, sources, cluster resources."""

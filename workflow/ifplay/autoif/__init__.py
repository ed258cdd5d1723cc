"""AutoIF: instructions, verifiers, cross-validation, back-translation, queries, rejection sampling."""

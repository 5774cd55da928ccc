"""The editing pipeline, written once for every backend: chunking, keys, value search, phrasings, compute_edits,
the EditResult (apply / revert / save / load), EditHistory and the measured presets."""

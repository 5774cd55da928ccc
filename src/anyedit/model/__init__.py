"""Knowledge of the model itself: where things are (arch), hooks, batching, prompts, generation, loading, and the
weight deltas that edits write (apply / restore / fingerprints). Imports nothing above it."""

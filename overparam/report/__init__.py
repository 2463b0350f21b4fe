"""Tables, figures and claim checks built from run directories only.

Nothing here imports torch or a recipe: a report reads `run.json`, `summary.json`,
`.hydra/config.yaml` and `.hydra/overrides.yaml` (and `metrics.jsonl` for training curves),
so thousands of runs index in seconds.
"""

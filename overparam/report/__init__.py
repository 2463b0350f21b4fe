"""Tables, figures and claim checks built from run directories only.

Nothing here imports torch or a recipe: a report reads `run.json` (status and the resolved
config), `summary.json` and `.hydra/overrides.yaml` (`.hydra/config.yaml` for runs whose run.json
has no config; `metrics.jsonl` for training curves), so thousands of runs index in seconds.
"""

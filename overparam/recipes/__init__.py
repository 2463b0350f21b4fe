"""Recipes: one module per method, called as `run(params, context) -> summary dict` (see context.py)."""

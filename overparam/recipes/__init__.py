"""Recipes: one module per method, called as `recipe(cfg, run) -> summary dict`."""

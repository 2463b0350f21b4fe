"""Overrides for a tiny run (a 16-unit MLP, 20 steps) shared by the tune and distill tests.

A module of its own: every test folder has a `conftest.py`, so `from conftest import ...` would
take whichever folder's conftest pytest imported first.
"""

TINY = ["model.widths=[16]", "train.epochs=null", "train.steps=20", "train.eval_every=20", "train.batch_size=64"]

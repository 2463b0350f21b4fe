"""overparam: prune, merge, tune and distill over-parameterized networks from one runner."""

__version__ = "0.1.0"

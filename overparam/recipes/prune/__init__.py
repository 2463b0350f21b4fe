"""The prune family of methods."""

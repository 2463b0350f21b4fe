"""The distill family of methods."""

"""The merge family of methods."""

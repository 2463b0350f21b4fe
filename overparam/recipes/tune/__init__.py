"""The tune family of methods."""

"""Analysis recipes: they study finished runs (ensembles, generalization measures) or the shape of a
sweep (random features for double descent) rather than producing a compressed model."""

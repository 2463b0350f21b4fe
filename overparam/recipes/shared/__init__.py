"""The floor below the recipe families: blocks several families use (choosing masks, loading a source model
or merge ingredients, the pruning lineage driver). A family imports these, never another family's modules."""

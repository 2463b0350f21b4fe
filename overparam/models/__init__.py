"""Model zoo: `build_model(cfg, input_shape, num_classes, seed)` with seeded initialization."""

from overparam.models.registry import build_model, count_parameters, output_layer_name

__all__ = ["build_model", "count_parameters", "output_layer_name"]

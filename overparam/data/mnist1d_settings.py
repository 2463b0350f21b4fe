"""MNIST-1D generator settings and named variants (no torch: config validation imports this)."""

from __future__ import annotations

from overparam.errors import UserError

# The mnist1d package's standard arguments (`get_dataset_args()`), in the order of the cache key.
STANDARD = dict(num_samples=5000, train_split=0.8, template_len=12, padding=(36, 60), scale_coeff=0.4,
                max_translation=48, corr_noise_scale=0.25, iid_noise_scale=2e-2, shear_scale=0.75,
                final_seq_length=40, generator_seed=42)

# Named shifts of the standard distribution: same templates, same labels, other transformations.
VARIANTS = {
    "standard": {},
    # Twice the correlated and five times the white noise: a corrupted-input shift.
    "noisy": {"corr_noise_scale": 0.5, "iid_noise_scale": 0.1},
    # No noise at all: the clean signals.
    "clean": {"corr_noise_scale": 0.0, "iid_noise_scale": 0.0},
    # Stronger shear and scale changes: a geometric shift.
    "warped": {"shear_scale": 1.5, "scale_coeff": 0.8},
    # Less translation: the digits sit near the middle.
    "centered": {"max_translation": 12},
}

# Settings that are counts (positive integers) or scales (>= 0).
_COUNTS = ("num_samples", "template_len", "max_translation", "final_seq_length", "generator_seed")
_SCALES = ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale")


def generator_args(variant: str | None = None, **settings) -> dict:
    """The generator's arguments (the package's names; `seed` for `generator_seed`): the standard ones,
    then the variant's, then every setting that is not None. Raises UserError on a bad name or value."""
    if variant is not None and variant not in VARIANTS:
        raise UserError(f"dataset.variant={variant!r} is not an MNIST-1D variant; one of {', '.join(VARIANTS)}")
    unknown = sorted(set(settings) - set(STANDARD))
    if unknown:
        raise UserError(f"dataset.{unknown[0]} is not an MNIST-1D generator setting; one of {', '.join(STANDARD)}")
    merged = {**STANDARD, **VARIANTS.get(variant or "standard", {}),
              **{k: v for k, v in settings.items() if v is not None}}
    for name in _COUNTS:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name in ("generator_seed", "max_translation") else 1):
            raise UserError(f"dataset.{name}={value!r} must be a {'non-negative' if name in ('generator_seed', 'max_translation') else 'positive'} integer")
    for name in _SCALES:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise UserError(f"dataset.{name}={value!r} must be a number >= 0")
    if not 0 < float(merged["train_split"]) < 1:
        raise UserError(f"dataset.train_split={merged['train_split']!r} must be in (0, 1)")
    padding = list(merged["padding"])
    if len(padding) != 2 or not all(isinstance(p, int) and p >= 0 for p in padding) or padding[0] > padding[1]:
        raise UserError(f"dataset.padding={merged['padding']!r} must be two integers [low, high], 0 <= low <= high")
    # Scales as floats: `0` and `0.0` are one setting and one cache file.
    args = dict(merged, padding=padding, **{name: float(merged[name]) for name in _SCALES})
    args["seed"] = args.pop("generator_seed")
    return args


# `dataset.augment`: the generator's own transforms, applied to each training batch (overparam/data/augment.py).
AUGMENT_KEYS = ("shift", "scale", "noise", "shear")


def augment_settings(value) -> dict | None:
    """`dataset.augment` checked: None (or an empty mapping) for none, else {shift: int >= 0, scale, noise,
    shear: numbers >= 0}, missing keys 0. Raises UserError on anything else."""
    if value is None or value is False:
        return None
    from collections.abc import Mapping

    if not isinstance(value, Mapping):
        raise UserError(f"dataset.augment={value!r} must be a mapping of {', '.join(AUGMENT_KEYS)} "
                        f"(e.g. dataset.augment={{shift: 4, noise: 0.05}}) or null")
    value = dict(value)
    unknown = sorted(set(value) - set(AUGMENT_KEYS))
    if unknown:
        raise UserError(f"dataset.augment.{unknown[0]} is not an MNIST-1D augmentation; one of {', '.join(AUGMENT_KEYS)}")
    settings = {key: value.get(key) or 0 for key in AUGMENT_KEYS}
    shift = settings["shift"]
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise UserError(f"dataset.augment.shift={shift!r} must be a non-negative integer (positions)")
    for key in AUGMENT_KEYS[1:]:
        number = settings[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
            raise UserError(f"dataset.augment.{key}={number!r} must be a number >= 0")
        settings[key] = float(number)
    return settings if any(settings.values()) else None

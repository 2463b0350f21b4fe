"""The masks of a run (a level's mask file, or the masks saved with its weights) or of a masks file."""

from __future__ import annotations

from pathlib import Path

from overparam.errors import UserError
from overparam.store.load import RunRef


def load_masks(spec: str | Path) -> dict:
    """{"<layer>.weight": 0/1 tensor} from a safetensors file of masks, or the masks of a run reference
    (`<dir>@level_<L>`: the level's mask file; otherwise the masks saved with its weights)."""
    from overparam.store.checkpoint import load_state

    path = Path(str(spec))
    if path.suffix == ".safetensors" and path.is_file():
        return load_state(path)
    ref = RunRef.parse(str(spec))
    mask_file = ref.root / ref.tag / "mask.safetensors" if ref.tag and ref.tag.startswith("level_") else None
    if mask_file is not None and mask_file.is_file():
        return load_state(mask_file)
    if ref.weights.is_file():
        return {k[: -len("_mask")]: v for k, v in load_state(ref.weights).items() if k.endswith(".weight_mask")}
    raise UserError(f"{spec}: no mask file or masked weights found")

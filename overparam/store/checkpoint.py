"""Checkpoints as safetensors files, for nested state (model, optimizer, scheduler, RNG).

safetensors holds a flat map of tensors plus string metadata. Nested state is stored as
a JSON skeleton in the metadata with each tensor replaced by a reference to its key, so
an optimizer's `state_dict` (integer keys, lists of param groups) round-trips exactly and
nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from overparam.errors import UserError
from overparam.store.atomic import atomic_write_bytes

SKELETON_KEY = "overparam.skeleton"


def _flatten(obj: Any, tensors: dict, prefix: str) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_encode_key(k), _flatten(v, tensors, f"{prefix}.{k}" if prefix else str(k))]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{prefix}.{i}" if prefix else str(i)) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and obj != obj:
            return {"__float__": "nan"}
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return {"__float__": str(obj)}
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (at {prefix!r})")


def _encode_key(key: Any) -> Any:
    if isinstance(key, (str, int)):
        return key
    raise TypeError(f"checkpoint dict keys must be str or int, got {type(key).__name__}")


def _unflatten(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def encode_state(state: Any) -> bytes:
    """Serialize nested state (dicts, lists, tensors, scalars) to safetensors bytes."""
    from safetensors.torch import save

    tensors: dict = {}
    skeleton = _flatten(state, tensors, "")
    # safetensors refuses tensors that share storage; flattened copies never do.
    tensors = {k: v.clone() if v.storage_offset() or not v.is_contiguous() else v for k, v in tensors.items()}
    return save(tensors, metadata={SKELETON_KEY: json.dumps(skeleton)})


def save_state(path: str | os.PathLike, state: Any) -> str:
    """Atomically write nested state to a safetensors file; returns its sha256."""
    data = encode_state(state)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_state(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Read a checkpoint written by `save_state` (or a plain safetensors file: a flat dict)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except UserError:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UserError(f"corrupt checkpoint {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if SKELETON_KEY not in metadata:
        return tensors
    return _skeleton(path, metadata[SKELETON_KEY], tensors)


def _skeleton(path: Path, text: str, tensors: dict) -> Any:
    """The nested state the skeleton metadata describes; one line when it does not fit the tensors."""
    from overparam.regular import json_int

    try:
        return _unflatten(json.loads(text, parse_int=json_int), tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else \
            f"names a tensor it does not hold ({exc})" if isinstance(exc, KeyError) else "is malformed"
        raise UserError(f"corrupt checkpoint {path}: its skeleton metadata {what}"[:300]) from None


class _Placeholder:
    """Stands for a tensor when a skeleton is checked from the file's header alone."""


def check_weights_file(path: str | os.PathLike) -> None:
    """A model weights file is whole before anything runs: its header reads and its skeleton (if any) is a
    mapping of names to tensors the file holds; reads the header only (UserError otherwise)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UserError(f"corrupt checkpoint {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if SKELETON_KEY not in metadata:
        return
    state = _skeleton(path, metadata[SKELETON_KEY], {key: _Placeholder() for key in keys})
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _Placeholder)
                                              for k, v in state.items()):
        raise UserError(f"corrupt checkpoint {path}: its skeleton metadata is not a mapping of names to tensors")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UserError(f"corrupt weights {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_tensors_ending(path: str | os.PathLike, suffix: str) -> dict:
    """The tensors of a safetensors file whose keys end with `suffix` (the others are not read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.endswith(suffix)}

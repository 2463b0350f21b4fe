"""Per-mask caches: anything derived from a mask (tile liveness, CSR structure, density) is built
once per mask change and reused on every call until the mask changes.

An entry is keyed on the mask tensor's identity plus a `kind` string and is valid while the
tensor's `_version` is unchanged. Every in-place write through the tensor (`MaskedLinear.set_mask`
copies into the buffer, `load_state_dict` copies under no_grad) bumps `_version`, so a new mask
invalidates the entry without any bookkeeping by the caller. Writes through `mask.data` bypass
the version counter; use the buffer itself (or `set_mask`).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Hashable

import torch


class MaskCache:
    """{(id(mask), kind): (weakref(mask), version, value)}; entries die with their mask."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, Hashable], tuple[weakref.ref, int, Any]] = {}
        self._lock = threading.Lock()
        self.builds = 0  # how many times a value was (re)built: tests check reuse with it

    def get(self, mask: torch.Tensor, kind: Hashable, build: Callable[[torch.Tensor], Any]) -> Any:
        """The value `build(mask)` for the mask's current contents, built at most once per change."""
        try:
            version = mask._version
        except RuntimeError:
            # Inference-mode tensors keep no version counter: nothing can prove the cache is fresh.
            return build(mask)
        key = (id(mask), kind)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is mask and entry[1] == version:
            return entry[2]
        value = build(mask)
        with self._lock:
            self.builds += 1
            ref = weakref.ref(mask, lambda _ref, key=key: self._forget(key, _ref))
            self._entries[key] = (ref, version, value)
        return value

    def _forget(self, key, ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                del self._entries[key]

    def clear(self) -> None:
        """Drop every entry (tests; freeing accelerator memory)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: The process-wide cache every backend uses.
mask_cache = MaskCache()


def mask_density(mask: torch.Tensor) -> float:
    """Fraction of nonzero mask entries, computed once per mask change."""
    return mask_cache.get(mask, "density", lambda m: float(m.count_nonzero()) / max(1, m.numel()))

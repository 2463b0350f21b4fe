"""Choices the prune family's declarations and the shared mask, lineage and one-pass blocks all name. Torch-free."""

from __future__ import annotations

import re
from typing import Any

from overparam.errors import UserError

SCOPES = ("global", "layerwise")
DISTRIBUTIONS = ("uniform", "erk")
REWIND_PATTERN = re.compile(r"^(init|none|(\d+)(it|ep))$")
NM_PATTERN = re.compile(r"^(\d+):(\d+)$")


def parse_rewind(text: Any) -> tuple[str, int]:
    """`init` -> ("init", 0); `none` -> ("none", 0); `500it` -> ("it", 500); `2ep` -> ("ep", 2)."""
    match = REWIND_PATTERN.match(str(text))
    if not match:
        raise UserError(f"rewind={text!r} is not allowed; use init, none, <N>it or <N>ep (e.g. rewind=500it)")
    if match.group(2) is None:
        return match.group(1), 0
    return match.group(3), int(match.group(2))


def parse_pattern(text) -> tuple[int, int] | None:
    """`prune.pattern` "n:m" (n of every m consecutive weights of a row kept) -> (n, m); null -> None."""
    if text is None:
        return None
    match = NM_PATTERN.match(str(text).strip())
    if not match or not 0 < int(match.group(1)) < int(match.group(2)):
        raise UserError(f"prune.pattern={text!r} must be n:m with 0 < n < m (2:4, 4:8), or null for unstructured")
    return int(match.group(1)), int(match.group(2))


def check_sparsity(params, cfg: dict) -> None:
    """Spec rule: unstructured needs 0 < sparsity; with a pattern, sparsity is 0 or the pattern's own."""
    pattern = parse_pattern(params.get("prune.pattern"))
    sparsity = float(cfg.get("sparsity") or 0.0)
    if pattern is None:
        if sparsity <= 0:
            raise UserError("set sparsity=<fraction in (0, 1)> (or prune.pattern=n:m for N:M sparsity)")
        return
    n, m = pattern
    if sparsity and abs(sparsity - (1 - n / m)) > 1e-9:
        raise UserError(f"prune.pattern={n}:{m} sets the sparsity ({1 - n / m:g}); leave sparsity at 0 or set it "
                        f"to {1 - n / m:g}")


def from_required(method: str):
    """Spec rule: `from=` names the run to prune."""
    def rule(params, cfg: dict) -> None:
        if not params.get("from"):
            raise UserError(f"method={method} prunes a finished run: give from=<run dir> (or <run dir>@level_<L>)")
    return rule

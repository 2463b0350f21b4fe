"""Choices the prune family's declarations and the shared mask and lineage blocks both name. Torch-free."""

from __future__ import annotations

import re
from typing import Any

from overparam.errors import UserError

SCOPES = ("global", "layerwise")
DISTRIBUTIONS = ("uniform", "erk")
REWIND_PATTERN = re.compile(r"^(init|none|(\d+)(it|ep))$")


def parse_rewind(text: Any) -> tuple[str, int]:
    """`init` -> ("init", 0); `none` -> ("none", 0); `500it` -> ("it", 500); `2ep` -> ("ep", 2)."""
    match = REWIND_PATTERN.match(str(text))
    if not match:
        raise UserError(f"rewind={text!r} is not allowed; use init, none, <N>it or <N>ep (e.g. rewind=500it)")
    if match.group(2) is None:
        return match.group(1), 0
    return match.group(3), int(match.group(2))

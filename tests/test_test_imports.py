"""The suite imports its helpers the way a clean checkout allows.

`tests/` is not a package and CI runs `pytest` without the checkout on `sys.path`, so
`from tests.x import ...` fails to collect there while passing wherever PYTHONPATH happens to
hold the checkout. Shared helpers are plain modules in `tests/` (on `sys.path` through pytest's
rootdir-relative import of `tests/conftest.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_test_imports_the_tests_folder_as_a_package():
    pattern = re.compile(r"^\s*(from\s+tests[.\s]|import\s+tests\b)", re.MULTILINE)
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []

"""Machine-checkable claims of paper presets, and the small safe language their expectations use.

A preset in `configs/experiment/` that reproduces a published result lists its claims::

    claims:
      - text: "A 1-D CNN beats an MLP of similar size on MNIST-1D"
        source: "Greydanus, Scaling Down Deep Learning (2020), Table 1"
        expect: "acc(model=cnn1d) > acc(model=mlp)"

`expect` is one expression or a list of them (all must hold). `runner reproduce experiment=<preset>`
runs the preset's sweep, evaluates every expectation on the sweep's runs and prints PASS/FAIL per
claim with the measured numbers; `runner table DIR --claims` does the same for finished runs.

Expectation syntax
------------------
An expectation is a Python-like expression, parsed with `ast` and evaluated by a whitelist; nothing
is ever passed to `eval`. Allowed:

- numbers, `+ - * /`, unary `-`, parentheses, `abs(x)`;
- comparisons `< <= > >= == !=` (chains like `0.1 < x < 0.9` too), `and`, `or`, `not`;
- **lookups** of a table cell: `METRIC(key=value, ...)`.

A lookup selects the records (runs, or prune levels / rows of runs) whose fields equal the given
values, and returns the mean over seeds of `METRIC` (any summary or level-row metric:
`test_accuracy`, `val_accuracy`, `test_loss`, `early_stop_step`, ...). Short names: `acc` =
`test_accuracy`, `val_acc` = `val_accuracy`, `loss` = `test_loss`.

- Keys are config keys (`method`, `model`, `sparsity`, `seed`, ...; a group such as `model`
  compares its `name`), write dots as double underscores (`optim__lr=0.05` for `optim.lr`), or
  row fields (`level`, `remaining_fraction`, alias `remaining`, `sparsity`, `alpha`, ...).
- Values are numbers, quoted strings, or bare words (`method=imp` means the string "imp"),
  `True`, `False`, `None`.
- A number matches exactly, or else the nearest value present within 10% (relative), so
  `remaining=0.2` finds a level at 0.2097; the table of measured numbers shows the value found.
- The selected records must differ only in `seed`; a lookup that would pool runs of different
  configs (or several prune levels) is an error that names the keys still to choose.

Wrap a lookup to get another statistic of the same cell: `std(...)`, `n(...)`, `min(...)`,
`max(...)`, `mean(...)` (the default).

Examples::

    acc(method=imp, remaining=0.2) >= acc(method=dense) - 0.005
    acc(method=imp, level=3) - acc(method=random_reinit, level=3) > 0.01
    early_stop_step(method=imp, remaining=0.1) < early_stop_step(method=imp, level=0)
    loss(alpha=0.5, aligned=True) - (loss(alpha=0, aligned=True) + loss(alpha=1, aligned=True)) / 2 < 0.1
    std(acc(model=cnn1d)) < 0.05 and n(acc(model=cnn1d)) >= 2
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any

from overparam.errors import UserError
from overparam.report.aggregate import KEY_ALIASES, Cell, display, resolve_metric
from overparam.report.index import Record, SEED_KEYS, is_identity_key

MAX_EXPRESSION_LENGTH = 2000
MAX_EXPRESSION_DEPTH = 100
NEAREST_TOLERANCE = 0.10
WRAPPERS = ("mean", "std", "n", "min", "max")
_COMPARE = {ast.Lt: (lambda a, b: a < b, "<"), ast.LtE: (lambda a, b: a <= b, "<="),
            ast.Gt: (lambda a, b: a > b, ">"), ast.GtE: (lambda a, b: a >= b, ">="),
            ast.Eq: (lambda a, b: a == b, "=="), ast.NotEq: (lambda a, b: a != b, "!=")}
_ARITH = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.Div: lambda a, b: a / b}


class ClaimError(UserError):
    """An expectation that does not parse, or a lookup that does not select one cell."""


@dataclass
class Lookup:
    """One table-cell lookup of an expectation: its text, the cell it found, the values it matched."""

    text: str
    cell: Cell
    chosen: dict[str, Any] = field(default_factory=dict)  # selector -> value actually matched (nearest)
    runs: int = 0


@dataclass
class ClaimResult:
    """Outcome of one claim: passed, or failed (with an error when it could not be evaluated)."""

    text: str
    source: str
    expectations: list[str]
    passed: bool
    lookups: list[Lookup] = field(default_factory=list)
    comparisons: list[str] = field(default_factory=list)
    error: str | None = None

    def report(self) -> str:
        """PASS/FAIL line, then the measured numbers."""
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.text}"
        lines = [head]
        if self.source:
            lines.append(f"      source: {self.source}")
        for expectation in self.expectations:
            lines.append(f"      expect: {expectation}")
        for lookup in self.lookups:
            chosen = "".join(f" [{k}={display(v)}]" for k, v in lookup.chosen.items())
            lines.append(f"      {lookup.text} = {lookup.cell.text('mean_std', 4)}{chosen}")
        for comparison in self.comparisons:
            lines.append(f"      measured: {comparison}")
        if self.error:
            lines.append(f"      error: {self.error}")
        return "\n".join(lines)


def parse_expectation(text: str) -> ast.Expression:
    """Parse and check one expectation; ClaimError naming the first construct that is not allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ClaimError(f"an expectation must be a non-empty string, got {text!r}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ClaimError(f"expectation longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ClaimError(f"expectation {_cut(text)} does not parse: {exc.msg}") from None
    except (RecursionError, MemoryError):  # the parser's own stack, on deep nesting
        raise ClaimError(f"expectation {_cut(text)} is nested deeper than {MAX_EXPRESSION_DEPTH} levels") from None
    # The checks and the evaluation recurse over the tree: its depth is measured first, without recursion.
    stack = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ClaimError(f"expectation {_cut(text)} is nested deeper than {MAX_EXPRESSION_DEPTH} levels")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    _check(tree.body, text)
    return tree


def _cut(text: str) -> str:
    return repr(text) if len(text) <= 80 else f"{text[:60]!r}... ({len(text)} characters)"


def _check(node: ast.AST, text: str) -> None:
    """Whitelist walk: only the constructs documented in the module docstring."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ClaimError(f"in {text!r}: only numbers may stand alone, not {node.value!r}")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        _check(node.left, text)
        _check(node.right, text)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check(node.operand, text)
        return
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text)
        return
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        _check(node.left, text)
        for comparator in node.comparators:
            _check(comparator, text)
        return
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name in WRAPPERS:
            if node.keywords or len(node.args) != 1 or not _is_lookup(node.args[0]):
                raise ClaimError(f"in {text!r}: {name}(...) takes one lookup, e.g. {name}(acc(method=imp))")
            _check(node.args[0], text)
            return
        if name == "abs":
            if node.keywords or len(node.args) != 1:
                raise ClaimError(f"in {text!r}: abs(...) takes one expression")
            _check(node.args[0], text)
            return
        if node.args:
            raise ClaimError(f"in {text!r}: a lookup takes key=value selectors only, e.g. {name}(method=imp)")
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ClaimError(f"in {text!r}: ** is not allowed in a lookup")
            _selector_value(keyword.value, text)
        return
    raise ClaimError(f"in {text!r}: {type(node).__name__} is not allowed (use numbers, arithmetic, comparisons, "
                     f"and/or/not and lookups like acc(method=imp))")


def _is_lookup(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in WRAPPERS \
        and node.func.id != "abs"


def _selector_value(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (int, float, str, bool))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
        return -node.operand.value
    if isinstance(node, ast.Name):
        return node.id  # a bare word is a string: method=imp
    raise ClaimError(f"in {text!r}: a selector value must be a number, a string or a bare word")


class _Evaluator:
    def __init__(self, records: list[Record], text: str):
        self.records = records
        self.text = text
        self.lookups: list[Lookup] = []
        self.comparisons: list[str] = []

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            left, right = self.number(node.left), self.number(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ClaimError(f"in {self.text!r}: division by zero")
            return _ARITH[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return not self.value(node.operand)
            operand = self.number(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BoolOp):
            # Evaluate every operand (no short-circuit) so the report shows every measured number.
            results = [bool(self.value(v)) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare):
            left = self.number(node.left)
            outcome = True
            for op, comparator in zip(node.ops, node.comparators):
                right = self.number(comparator)
                function, symbol = _COMPARE[type(op)]
                holds = function(left, right)
                self.comparisons.append(f"{_fmt(left)} {symbol} {_fmt(right)}: {'yes' if holds else 'no'}")
                outcome = outcome and holds
                left = right
            return outcome
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            if name == "abs":
                return abs(self.number(node.args[0]))
            if name in WRAPPERS:
                return self.statistic(node.args[0], name)
            return self.statistic(node, "mean")
        raise ClaimError(f"in {self.text!r}: cannot evaluate {type(node).__name__}")

    def number(self, node: ast.AST) -> float:
        value = self.value(node)
        if isinstance(value, bool):
            raise ClaimError(f"in {self.text!r}: a comparison result is used as a number")
        return float(value)

    def statistic(self, call: ast.Call, which: str) -> float:
        lookup = self.lookup(call)
        cell = lookup.cell
        if which == "n":
            return float(cell.n)
        value = {"mean": cell.mean, "std": cell.std, "min": min(cell.values) if cell.values else None,
                 "max": cell.max}[which]
        if value is None:
            if which == "std":
                raise ClaimError(f"{ast.unparse(call)}: std needs at least two seeds (n={cell.n})")
            raise ClaimError(f"{ast.unparse(call)}: no finished run reports this metric"
                             + (f" {cell.marks()}" if cell.marks() else ""))
        return value

    def lookup(self, call: ast.Call) -> Lookup:
        selectors = {KEY_ALIASES.get(k.arg.replace("__", "."), k.arg.replace("__", ".")):  # type: ignore[union-attr]
                     _selector_value(k.value, self.text) for k in call.keywords}
        text = ast.unparse(call)
        candidates, chosen = select(self.records, selectors, text)
        _check_single_cell(candidates, selectors, text)
        metric = resolve_metric(candidates, call.func.id)  # type: ignore[attr-defined]
        cell = Cell()
        for record in candidates:
            cell.add(record, metric)
        lookup = Lookup(text=text, cell=cell, chosen=chosen, runs=len({id(r.run) for r in candidates}))
        if all(existing.text != text for existing in self.lookups):
            self.lookups.append(lookup)
        return lookup


def _fmt(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


def _equal(found: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(found, bool):
        return found is wanted or str(found).lower() == str(wanted).lower()
    if isinstance(wanted, (int, float)) and isinstance(found, (int, float)):
        return math.isclose(float(found), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    if wanted is None:
        return found is None or found == "null"
    return display(found) == display(wanted)


def select(records: list[Record], selectors: dict[str, Any], text: str) -> tuple[list[Record], dict[str, Any]]:
    """Records matching every selector (numbers: exact, else nearest within 10%); and the nearest values used."""
    chosen: dict[str, Any] = {}
    current = records
    # Exact selectors first, so a nearest-number search only looks among the right runs.
    numeric = {k: v for k, v in selectors.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key, wanted in selectors.items():
        if key in numeric:
            continue
        present = [r for r in current if r.has(key)]
        if not present:
            raise ClaimError(f"{text}: no run has the key {key!r}")
        matched = [r for r in present if _equal(r.get(key), wanted)]
        if not matched:
            values = sorted({display(r.get(key)) for r in present})
            raise ClaimError(f"{text}: no run with {key}={display(wanted)} (present: {', '.join(values)})")
        current = matched
    for key, wanted in numeric.items():
        present = [r for r in current if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if not present:
            raise ClaimError(f"{text}: no run has a number under {key!r}")
        exact = [r for r in present if _equal(r.get(key), wanted)]
        if exact:
            current = exact
            continue
        values = sorted({float(r.get(key)) for r in present})
        nearest = min(values, key=lambda v: abs(v - wanted))
        scale = max(abs(wanted), abs(nearest), 1e-12)
        if abs(nearest - wanted) / scale > NEAREST_TOLERANCE:
            shown = ", ".join(f"{v:g}" for v in values[:20])
            raise ClaimError(f"{text}: no {key} within 10% of {wanted:g} (present: {shown})")
        chosen[key] = nearest
        current = [r for r in present if math.isclose(float(r.get(key)), nearest, rel_tol=1e-9, abs_tol=1e-12)]
    return current, chosen


def _check_single_cell(records: list[Record], selectors: dict[str, Any], text: str) -> None:
    """The matched records must differ only in seed (and be one level/row of each run)."""
    runs = {id(r.run): r.run for r in records}.values()
    differing = []
    keys = {k for run in runs for k in run.flat_config}
    for key in sorted(keys):
        if not is_identity_key(key) or key in SEED_KEYS or key in selectors:
            continue
        values = {repr(run.flat_config.get(key)) for run in runs}
        if len(values) > 1:
            differing.append(key)
    differing = [k for k in differing if not any(k.startswith(f"{o}.") for o in differing)]
    per_run: dict[int, int] = {}
    for record in records:
        per_run[id(record.run)] = per_run.get(id(record.run), 0) + 1
    if any(count > 1 for count in per_run.values()):
        kind = records[0].row_kind or "row"
        differing.append("level" if kind == "level" else "row")
    if differing:
        raise ClaimError(f"{text} matches more than one table cell; choose {', '.join(differing)}")


def claim_list(claims: Any) -> list[dict]:
    """Validate a preset's `claims:` block: a list of {text, source, expect}; every expectation parses."""
    if claims is None:
        return []
    if not isinstance(claims, list):
        raise ClaimError("claims: must be a list of {text, source, expect}")
    out = []
    for index, claim in enumerate(claims):
        if not isinstance(claim, dict) or "expect" not in claim:
            raise ClaimError(f"claims[{index}] must be a mapping with text, source and expect")
        unknown = set(claim) - {"text", "source", "expect"}
        if unknown:
            raise ClaimError(f"claims[{index}] has unknown keys: {', '.join(sorted(unknown))}")
        expect = claim["expect"]
        expectations = [expect] if isinstance(expect, str) else list(expect or [])
        if not expectations:
            raise ClaimError(f"claims[{index}].expect is empty")
        for expectation in expectations:
            parse_expectation(expectation)
        out.append({"text": str(claim.get("text") or expectations[0]), "source": str(claim.get("source") or ""),
                    "expect": [str(e) for e in expectations]})
    return out


def evaluate_claim(claim: dict, records: list[Record]) -> ClaimResult:
    """Evaluate every expectation of one claim on the records; errors make the claim FAIL with the reason."""
    result = ClaimResult(text=claim["text"], source=claim.get("source", ""), expectations=claim["expect"],
                         passed=True)
    for expectation in claim["expect"]:
        evaluator = _Evaluator(records, expectation)
        try:
            outcome = evaluator.value(parse_expectation(expectation).body)
        except ClaimError as exc:
            result.passed = False
            result.error = str(exc)
            outcome = False
        if not isinstance(outcome, bool):
            result.passed = False
            result.error = f"{expectation!r} is a number ({_fmt(outcome)}), not a comparison"
        result.passed = result.passed and bool(outcome)
        result.lookups.extend(evaluator.lookups)
        result.comparisons.extend(evaluator.comparisons)
    return result


def evaluate_claims(claims: Any, records: list[Record]) -> list[ClaimResult]:
    """Every claim's result, in order."""
    return [evaluate_claim(claim, records) for claim in claim_list(claims)]


def claims_of_runs(records: list[Record]) -> list[dict]:
    """The `claims:` block saved in the runs' configs (a preset's sweep saves it in every job)."""
    for record in records:
        claims = record.run.config.get("claims") if isinstance(record.run.config, dict) else None
        if claims:
            return claim_list(claims)
    return []

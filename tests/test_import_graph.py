"""The package's import graph, imports inside functions included: no cycle, and no recipe family importing another.

Read from the source (an AST walk), so a loop hidden in a function body counts as one at module level does.
A package's `__init__` importing its own submodules (a re-export) is not an edge of the design. A recipe
family (`recipes/<family>/`) may import the floor below the families (`recipes/shared/`, `recipes/context.py`,
...) and anything outside `recipes/`, never another family's modules.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from overparam.methods import FAMILIES

ROOT = Path(__file__).resolve().parent.parent / "overparam"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules `name` imports anywhere in its source (`from a.b import c` names a.b.c when it is one)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (here[: len(here) - node.level + 1] if node.level else []) + ([node.module] if node.module else [])
            module = ".".join(base)
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    edges = {name: _imports(name, path, known) for name, path in modules.items()}
    return {name: {t for t in targets if not (modules[name].name == "__init__.py" and t.startswith(name + "."))}
            for name, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _family(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "recipes" and parts[2] in FAMILIES else None


def test_the_walk_sees_imports_inside_functions_and_finds_a_loop():
    source = ast.parse("def f():\n    from overparam.store.readers import read_yaml\n")
    assert any(isinstance(node, ast.ImportFrom) for node in ast.walk(source))
    edges = graph()
    assert "overparam.store.readers" in edges["overparam.configtree"]  # an in-function import (configtree.config_dir)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_recipe_family_imports_another_family():
    crossing = sorted(f"{module} -> {target}" for module, targets in graph().items() for target in targets
                      if _family(module) and _family(target) and _family(target) != _family(module))
    assert crossing == []


def test_the_floor_below_the_families_imports_no_family():
    floor = [m for m in graph() if m.startswith("overparam.recipes.") and _family(m) is None]
    assert "overparam.recipes.shared.lottery" in floor and "overparam.recipes.shared.merging" in floor
    upward = sorted(f"{module} -> {target}" for module in floor for target in graph()[module] if _family(target))
    assert upward == []


def _below_the_cli() -> dict[str, Path]:
    return {name: path for name, path in _modules().items() if not name.startswith("overparam.cli")}


def test_no_config_library_below_the_cli():
    """Hydra's config objects stay in cli/: below it, configs are plain dicts and `overparam.settings.Settings`."""
    words = ("omegaconf", "OmegaConf", "DictConfig", "ListConfig")
    found = sorted(f"{path.relative_to(ROOT.parent)}:{number}" for path in _below_the_cli().values()
                   for number, line in enumerate(path.read_text().splitlines(), start=1)
                   if any(word in line for word in words))
    assert found == []


def test_hydra_is_imported_only_in_the_cli():
    found = []
    for name, path in _below_the_cli().items():
        for node in ast.walk(_tree(path)):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{name} imports {m}" for m in modules if m == "hydra" or m.startswith("hydra.")]
    assert found == []


def test_nothing_below_the_cli_imports_or_names_it():
    """No import of `overparam.cli` below it, and no code string naming one of its modules (a registry entry
    would import it by that name)."""
    imports = sorted(f"{module} -> {target}" for module, targets in graph().items() if module in _below_the_cli()
                     for target in targets if target.startswith("overparam.cli"))
    named = sorted(f"{name}: {node.value}" for name, path in _below_the_cli().items()
                   for node in ast.walk(_tree(path))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and node.value.startswith("overparam.cli"))
    assert imports == [] and named == []


# Strings equal to a method's name outside its family folder that do not name the method: a phase's tag,
# a lottery control, the level cache's kind, a plot label, `runner search` (the command, not the method).
NOT_THE_METHOD = {
    ("overparam/recipes/merge/sms.py", "dense"), ("overparam/recipes/prune/channel.py", "dense"),
    ("overparam/recipes/prune/channel.py", "finetune"), ("overparam/recipes/prune/nm.py", "dense"),
    ("overparam/report/plots.py", "dense"), ("overparam/recipes/shared/lottery.py", "imp"),
    ("overparam/recipes/shared/lottery.py", "random_prune"), ("overparam/cli/main.py", "search"),
    # the family list: `quantize` is the quantize family's name as well as its method's
    ("overparam/methods.py", "quantize"),
}
# `method=kd +prune=imp` composes IMP's lineage with distillation: the prune group's option names IMP and kd
# reads IMP's declared parameters by that name.
COMPOSED = {("overparam/recipes/distill/kd.py", "imp"), ("overparam/recipes/distill/params.py", "imp")}


def test_a_method_is_named_only_in_its_family_folder_and_its_yaml():
    """A method's name as a code string appears in its family folder (dense: recipes/dense.py and the root
    recipes/params.py) and nowhere else in the package, but for the listed strings that are not the method."""
    from overparam.methods import methods

    family = {name: method.family for name, method in methods().items()}
    found = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT.parent).as_posix()
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in family):
                continue
            home = family[node.value]
            inside = (relative.startswith(f"overparam/recipes/{home}/") if home else
                      relative in ("overparam/recipes/dense.py", "overparam/recipes/params.py"))
            if not inside:
                found.add((relative, node.value))
    assert sorted(found - NOT_THE_METHOD - COMPOSED) == []
    assert (NOT_THE_METHOD | COMPOSED) <= found  # no stale entry

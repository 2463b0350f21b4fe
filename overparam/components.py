"""Every component a config may select, by name: the package's registries (name -> callable).

A config names components; it never names code. `model: {name: mlp, _target_: overparam.models.zoo.mlp}`
selects the registered model `mlp`; its `_target_`, when present, must be exactly the path registered
here (a string compared with a constant of this module, never a prefix), and the object built is the
one this module imports from its own constants. So no attribute walk through a module's imports
(`torch.nn.modules.module.torch.hub.load`, `<a module>.os.system`) can reach anything: the
string from the file is never given to an importer.

Hydra itself instantiates a few things from the `hydra:` section (callbacks, the launcher, the
sweeper and its sampler, logging handlers). Those are checked the same way before Hydra sees them:
callbacks, launchers and sweepers by a check the CLI passes in (its own callbacks; the installed
plugins' classes, by identity), so this module knows neither Hydra nor the CLI; samplers against
SAMPLERS, logging handlers against LOGGING_CLASSES.

`--trust` (environment OVERPARAM_TRUST_TARGETS=1) lets a user run a component of their own that is
not registered; so does registering it in code with `register(kind, name, callable)`.

This module imports nothing heavy: `runner ls` and `runner --help` stay fast.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Callable, Iterator

from overparam.errors import UserError
from overparam.methods import Method, methods

TRUST_ENV = "OVERPARAM_TRUST_TARGETS"

# kind -> name -> "module:attribute" (a constant of this package), a declared Method or a callable registered in code.
REGISTRIES: dict[str, dict[str, Any]] = {
    "model": {
        "mlp": "overparam.models.zoo:mlp",
        "cnn1d": "overparam.models.zoo:cnn1d",
        "logreg": "overparam.models.zoo:logreg",
        "mlp_mnist1d": "overparam.models.zoo:mlp_mnist1d",
        "cnn1d_mnist1d": "overparam.models.zoo:cnn1d_mnist1d",
        "gru": "overparam.models.sequence:gru",
        "transformer1d": "overparam.models.sequence:transformer1d",
        "conv2": "overparam.models.conv:conv2",
        "conv4": "overparam.models.conv:conv4",
        "conv6": "overparam.models.conv:conv6",
        "lenet5": "overparam.models.lenet:lenet5",
        "resnet20": "overparam.models.resnet:resnet20",
        "vgg11": "overparam.models.vgg:vgg11",
        "vgg16": "overparam.models.vgg:vgg16",
        "torchvision": "overparam.models.tv:torchvision_model",
        "gpt": "overparam.models.gpt:gpt",
        "hf": "overparam.models.hf:hf",
    },
    "dataset": {
        "mnist1d": "overparam.data.mnist1d:load",
        "mnist": "overparam.data.mnist:load_mnist",
        "fashion_mnist": "overparam.data.mnist:load_fashion_mnist",
        "cifar10": "overparam.data.cifar:load_cifar10",
        "cifar100": "overparam.data.cifar:load_cifar100",
        "hf": "overparam.data.hf:load",
        "text": "overparam.data.text:load",
    },
    # Every declared method (overparam.methods.declare, beside each Spec); its `_target_` is the declaration's.
    "method": methods(),
    "logger": {
        "tensorboard": "overparam.store.loggers:TensorBoardLogger",
        "mlflow": "overparam.store.loggers:MLflowLogger",
    },
    "optimizer": {
        "sgd": "torch.optim:SGD",
        "adam": "torch.optim:Adam",
        "adamw": "torch.optim:AdamW",
    },
}

# Optuna samplers a sweeper config may name (hydra.sweeper.sampler._target_), exact strings.
SAMPLERS = tuple(f"optuna.samplers.{name}" for name in (
    "TPESampler", "RandomSampler", "CmaEsSampler", "GridSampler", "NSGAIISampler", "NSGAIIISampler",
    "QMCSampler", "BruteForceSampler", "GPSampler"))
# Classes `logging.config.dictConfig` may build from hydra.job_logging / hydra.hydra_logging.
LOGGING_CLASSES = ("logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter",
                   "colorlog.ColoredFormatter")
LOGGING_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
# Keys that make Hydra's `instantiate` call something differently; no shipped config uses them.
INSTANTIATE_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")
# Resolvers a config from elsewhere may use: they read values, they run nothing and write nothing.
SAFE_RESOLVERS = ("oc.env", "oc.select", "oc.dict.keys", "oc.dict.values", "now", "hydra")
# train.yaml's run and sweep directories claim a fresh directory (a write): only there.
DIRECTORY_RESOLVER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
_RESOLVER_CALL = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")

_TRUST_HINT = "pass --trust to run a component of your own, or register it in overparam.components"


def trusted() -> bool:
    """True when the user passed `--trust` on this command line (inherited by the jobs it starts)."""
    return os.environ.get(TRUST_ENV) == "1"


def register(kind: str, name: str, component: Any) -> None:
    """Add a component of your own under `name` (a callable, or a "module:attribute" string)."""
    if kind not in REGISTRIES:
        raise ValueError(f"unknown component kind {kind!r}; one of {', '.join(REGISTRIES)}")
    REGISTRIES[kind][name] = component


def dotted(entry: Any) -> str:
    """The `_target_` string a registry entry answers to ("pkg.module.attr")."""
    if isinstance(entry, str):
        return entry.replace(":", ".")
    if isinstance(entry, Method):
        return entry.target
    return f"{entry.__module__}.{entry.__qualname__}"


def _load(entry: Any) -> Callable:
    if isinstance(entry, Method):
        return entry.load()
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _import_path(target: str) -> Any:
    """The object a dotted path names (its longest importable module, then attributes): --trust only."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(f"no module in {target!r}")


def names(kind: str) -> list[str]:
    """Registered names of one kind."""
    return sorted(REGISTRIES[kind])


def name_of_target(kind: str, target: Any) -> str | None:
    """The registered name whose path is exactly `target`, or None."""
    for name, entry in REGISTRIES[kind].items():
        if isinstance(target, str) and dotted(entry) == target:
            return name
    return None


def resolve(kind: str, node: Any, *, trust: bool | None = None) -> Callable:
    """The callable a config node selects: by its `_target_` when that is a registered path, else by `name`.

    An unregistered `_target_` is refused unless `trust` (default: the `--trust` flag), which imports it.
    """
    trust = trusted() if trust is None else trust
    get = node.get if hasattr(node, "get") else (lambda key, default=None: default)
    target, name = get("_target_"), get("name")
    registry = REGISTRIES[kind]
    if target is not None:
        chosen = name_of_target(kind, target)
        if chosen is None:
            if trust and isinstance(target, str):
                try:
                    return _import_path(target)
                except Exception as exc:  # noqa: BLE001 - a user's own component that does not import
                    raise UserError(f"{kind} {name!r}: cannot import {target}: {exc}") from None
            raise UserError(f"{kind} {name!r}: _target_={target!r} is not a registered {kind} "
                            f"(registered: {', '.join(sorted(registry))}); {_TRUST_HINT}")
        return _load(registry[chosen])
    if name in registry:
        return _load(registry[name])
    raise UserError(f"{kind} {name!r} is not registered; choose one of: {', '.join(sorted(registry))}")


# --- checking a whole config -------------------------------------------------------------------------

def walk(tree: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path of the key, key, value) for every mapping entry of a nested dict/list tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, key, value
            yield from walk(value, where)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from walk(value, f"{path}[{index}]")


def _registered_for(where: str, target: Any) -> bool:
    """A `_target_` outside hydra: of the kind its node is (`model`, `teacher.model`, `dataset`...), else any kind."""
    node = where[: -len("._target_")] if where.endswith("._target_") else where
    slot = node.rsplit(".", 1)[-1]
    kinds = (slot,) if slot in ("model", "dataset", "method", "logger") else ("model", "dataset", "method", "logger")
    return any(name_of_target(kind, target) for kind in kinds)


def _hydra_target_allowed(where: str, target: Any, plugins: Callable[[str, Any], bool] | None) -> bool:
    parts = where.split(".")
    if len(parts) == 4 and parts[1] == "callbacks":  # hydra.callbacks.<name>._target_
        # The CLI's own callbacks, known only to the CLI (cli/foreign.py): without its check, none pass.
        return plugins is not None and plugins("callback", target)
    if where in ("hydra.launcher._target_", "hydra.sweeper._target_"):
        # Hydra's installed plugins, known only to the CLI (overparam/cli/foreign.py): without it, none pass.
        return plugins is not None and plugins(parts[1], target)
    if where == "hydra.sweeper.sampler._target_":
        return target in SAMPLERS
    return False


def check_resolvers(tree: Any, *, source: str, hydra_only: bool = False) -> None:
    """Refuse interpolations that call a resolver outside SAFE_RESOLVERS (oc.create, oc.decode, custom ones).

    `hydra_only`: check the `hydra` section only (a user's own command line may use any resolver in its
    own keys; the hydra section's values are instantiated by Hydra, so it never may).
    """
    def strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, str):
            yield where, value
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "${" in key:
                    yield where, key
                yield from strings(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield from strings(item, f"{where}[{index}]")

    root = tree
    if hydra_only:
        root = {"hydra": tree.get("hydra")} if isinstance(tree, dict) and tree.get("hydra") is not None else {}
    for where, text in strings(root, ""):
        if "${" not in text or where.startswith("hydra.overrides."):
            # hydra.overrides records the command line as text; each override is checked where it applies.
            continue
        for resolver in _RESOLVER_CALL.findall(text):
            if resolver in SAFE_RESOLVERS:
                continue
            if resolver == "unique_dir" and where in DIRECTORY_RESOLVER_KEYS:
                continue
            raise UserError(f"{source}: {where} uses the resolver ${{{resolver}:...}}, which a config may not "
                            f"call here (allowed: {', '.join(SAFE_RESOLVERS)}); refusing to run it")


def check_config(tree: Any, *, trust: bool | None = None, source: str = "config",
                 plugins: Callable[[str, Any], bool] | None = None) -> None:
    """Refuse a config (plain container) that names anything but registered components.

    Every `_target_` outside `hydra:` must be exactly a registered model/dataset/method/logger path;
    in `hydra:` only the project's callbacks, installed launchers and sweepers, Optuna samplers and
    plain logging handlers; `_args_`/`_partial_`/`_recursive_`/`_convert_` nowhere; a target is a plain
    string (no interpolation). `--trust` lifts the checks outside logging. `plugins(kind, target)` says
    whether a callback `_target_` is the CLI's own and a launcher/sweeper's an installed Hydra plugin (the CLI
    passes its check; without it none of those pass).
    """
    trust = trusted() if trust is None else trust
    if hasattr(tree, "items") and not isinstance(tree, dict):
        from overparam.settings import plain

        tree = plain(tree)
    for where, key, value in walk(tree):
        in_hydra = where.startswith("hydra.")
        if in_hydra and (".job_logging." in where or ".hydra_logging." in where):
            _check_logging_entry(where, key, value, source)
            continue
        if trust:
            continue
        if key in INSTANTIATE_KEYS:
            raise UserError(f"{source}: {where} is refused (configs select registered components by name); "
                            f"{_TRUST_HINT}")
        if key != "_target_":
            continue
        allowed = _hydra_target_allowed(where, value, plugins) if in_hydra else _registered_for(where, value)
        if not allowed:
            what = ("only the project's callbacks and the installed launchers and sweepers may be named there"
                    if in_hydra else "not a registered component")
            raise UserError(f"{source}: {where}={value!r} is refused ({what}); {_TRUST_HINT}")


def _check_logging_entry(where: str, key: Any, value: Any, source: str) -> None:
    # logging.config.dictConfig imports `class`, `()` and `ext://` values: only plain handlers pass.
    if key == "()" or (isinstance(value, str) and value.startswith(("cfg://", "ext://"))
                       and value not in LOGGING_STREAMS):
        raise UserError(f"{source}: {where}={value!r} is refused (a logging config may only use plain handlers)")
    if key == "class" and value not in LOGGING_CLASSES:
        raise UserError(f"{source}: {where}={value!r} is refused (logging handlers allowed: "
                        f"{', '.join(LOGGING_CLASSES)})")
    if key == "mode" and ".handlers." in where and value not in ("a", None):
        raise UserError(f"{source}: {where}={value!r} is refused (a log file is only appended to)")

"""`runner export <run>[@level_L] --to FILE.safetensors`: a ticket as a plain PyTorch state dict.

The file is a flat safetensors map of the model's parameter and buffer names, with every mask
folded into its weight (pruned entries are exact zeros, no `weight_mask` keys), so it loads with
`load_state_dict(..., strict=True)` into the unmasked model the run's config builds. A
channel-pruned run is exported shrunk (the removed channels are gone, not zero) unless
`--no-shrink`; its JSON then gives the narrower shapes (and `model.widths` for an MLP).
Beside it, `FILE.json` says what it is: source run, level, model, dataset, sparsity, metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from overparam.errors import UserError

EPILOG = """examples:
  runner export outputs/2026-11-23/10-00-00 --to ticket.safetensors
  runner export outputs/2026-11-23/10-00-00@level_7 --to level7.safetensors
  runner export outputs/2026-11-23/10-00-00 --to lm_folder --format hf
  runner export outputs/2026-11-24/09-00-00 --to q4.safetensors --packed   (a quantized run, as integers)
Load it:  model.load_state_dict(safetensors.torch.load_file("ticket.safetensors"), strict=True)"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `runner export`."""
    parser = argparse.ArgumentParser(prog="runner export", description="Export a run's weights (a level with "
                                     "@level_L) as a plain safetensors state dict, masks folded in.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run directory, optionally @level_<L>")
    parser.add_argument("--to", required=True, metavar="FILE.safetensors", help="where to write the weights")
    parser.add_argument("--format", choices=("safetensors", "hf"), default="safetensors",
                        help="hf: a Hugging Face folder (--to DIR) that AutoModelForCausalLM loads (language models)")
    parser.add_argument("--no-shrink", action="store_true",
                        help="keep a channel-pruned model at full size (removed channels as zeros)")
    parser.add_argument("--packed", action="store_true",
                        help="a quantized run (method=quantize) as stored: bit-packed integer codes with their "
                             "scales and zero points (overparam.models.quantized); default: the dequantized floats")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    return parser


def _channel_keep(ref) -> dict | None:
    """The kept channels of a channel-pruned run's final weights (the run's checkpoints/channels.safetensors,
    which only channel pruning writes), or None for any other run or level."""
    from overparam.store.checkpoint import load_state

    if ref.tag not in (None, "level_1"):
        return None
    path = ref.root / "checkpoints" / "channels.safetensors"
    if not path.is_file():
        return None
    return {name: mask.bool() for name, mask in load_state(path).items()}


def _level_row(summary: dict | None, tag: str | None) -> dict:
    summary = summary or {}
    if tag and tag.startswith("level_"):
        for row in summary.get("levels") or []:
            if isinstance(row, dict) and str(row.get("level")) == tag[len("level_"):]:
                return row
        return {}
    return summary


def _targets(to: str | Path, force: bool) -> tuple[Path, Path]:
    """The .safetensors file and its .json beside it; refused when not .safetensors or already there without
    --force."""
    to = Path(to)
    if to.suffix != ".safetensors":
        raise UserError(f"--to {to}: the file name must end in .safetensors")
    meta_path = to.with_suffix(".json")
    for path in (to, meta_path):
        if path.exists() and not force:
            raise UserError(f"{path} exists; give --force to overwrite it")
    return to, meta_path


def export(run: str, to: str | Path, *, shrink: bool = True, force: bool = False) -> dict:
    """Write the plain state dict and its JSON; returns the JSON's content."""
    import copy

    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save

    from overparam.models.masked import densify, masked_modules, sparsity_report
    from overparam.store.atomic import atomic_write_bytes, atomic_write_json, read_json
    from overparam.store.checkpoint import file_sha256
    from overparam.store.load import RunRef, check_finished, load_run_model, local_data_dir, saved_config

    to, meta_path = _targets(to, force)
    ref = RunRef.parse(run)
    check_finished(ref.root)
    if ref.tag is not None and not (ref.root / ref.tag).is_dir() and not ref.weights.is_file():
        raise UserError(f"{ref.root} has no {ref.tag} (no {ref.weights.relative_to(ref.root)})")
    saved = saved_config(ref.root).to_dict()
    for key, value in ((read_json(ref.root / "run.json") or {}).get("weights_config") or {}).items():
        saved[key] = value  # a merge records the architecture its weights really have
    from overparam.data import load_dataset

    # This machine's data folder: a saved run's paths are where it ran, never where this command reads or writes.
    data = load_dataset(saved["dataset"], local_data_dir(), seed=int(saved["seed"]), device="cpu")
    model, cfg = load_run_model(ref, data=data)
    model.eval()
    keep = _channel_keep(ref) if shrink else None
    report = sparsity_report(model) if masked_modules(model) else None
    reference = copy.deepcopy(model)
    if keep is not None:
        from overparam.models.channels import shrink as shrink_channels

        model = shrink_channels(model, keep)
    model = densify(model)
    state = {name: tensor.detach().contiguous().cpu().clone() for name, tensor in model.state_dict().items()}
    # The file must behave exactly like the run's model: checked on a batch before anything is written.
    _check_same_outputs(reference, model, state, data.test_x[:64])
    model_cfg = cfg.model.to_dict()
    if keep is not None and isinstance(model_cfg.get("widths"), list) and len(model_cfg["widths"]) == len(keep):
        model_cfg["widths"] = [int(kept.sum()) for kept in keep.values()]
    summary = read_json(ref.root / "summary.json")
    row = _level_row(summary, ref.tag)
    info = read_json(ref.root / "run.json") or {}
    prunable_zeros = None
    if report is not None:
        prunable_zeros = report.get("sparsity")
    meta = {
        "format": "plain state dict (safetensors); load_state_dict(strict=True) into the model below",
        "source": str(ref.root), "level": ref.tag, "method": info.get("method"),
        "config_hash": info.get("config_hash"), "model": model_cfg,
        "dataset": cfg.dataset.get("name"),
        "seed": int(cfg.seed), "shrunk": keep is not None,
        "channels_kept": {name: int(kept.sum()) for name, kept in keep.items()} if keep is not None else None,
        "sparsity": prunable_zeros,
        "parameters": int(sum(t.numel() for t in state.values())),
        "nonzero": int(sum(int(torch.count_nonzero(t)) for t in state.values())),
        "shapes": {name: list(t.shape) for name, t in state.items()},
        "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and (k.endswith("accuracy") or k.endswith("loss") or k in ("sparsity", "remaining_fraction"))},
    }
    atomic_write_bytes(to, save(state, metadata={"source": str(ref.root), "level": str(ref.tag or "")}))
    meta["sha256"] = file_sha256(to)
    atomic_write_json(meta_path, meta)
    return meta


def export_packed(run: str, to: str | Path, *, force: bool = False) -> dict:
    """Write a quantized run's packed state (codes, scales, zero points, meta per weight) and its JSON."""
    from safetensors.torch import save

    from overparam.models.quantized import FORMATS, packed_weights
    from overparam.store.atomic import atomic_write_bytes, atomic_write_json
    from overparam.store.checkpoint import file_sha256, load_state
    from overparam.store.load import RunRef, check_finished

    to, meta_path = _targets(to, force)
    ref = RunRef.parse(run)
    info = check_finished(ref.root)
    if not ref.has_weights():
        raise UserError(f"{ref.root} has no weights at {ref.weights.relative_to(ref.root)}")
    state = load_state(ref.weights)
    names = packed_weights(state)
    if not names:
        raise UserError(f"{run} holds no quantized weights (--packed exports a method=quantize run)")
    quantized = {}
    for name in names:
        bits, group, fmt, *shape = [int(v) for v in state[f"{name}.qmeta"].tolist()]
        quantized[name] = {"bits": bits, "group": group, "format": FORMATS[fmt], "shape": shape}
    meta = {"format": "packed quantized state (overparam.models.quantized.dequantize_state gives the floats): "
                      "<weight>.qcodes bit-packed codes, .qscale, .qzero, .qmeta [bits, group, format, *shape]",
            "source": str(ref.root), "level": ref.tag, "method": info.get("method"),
            "config_hash": info.get("config_hash"), "quantized": quantized}
    atomic_write_bytes(to, save({k: v.contiguous() for k, v in state.items()}, metadata={"source": str(ref.root)}))
    meta["bytes"] = to.stat().st_size
    meta["sha256"] = file_sha256(to)
    atomic_write_json(meta_path, meta)
    return meta


def _check_same_outputs(reference, plain, state, x) -> None:
    """The exported weights, loaded strictly into plain layers, give the masked model's outputs on test inputs."""
    import torch

    plain.load_state_dict(state, strict=True)
    plain.eval()
    with torch.no_grad():
        expected, got = reference(x), plain(x)
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise UserError("the exported weights do not reproduce the run's outputs (please report this)")


def main(argv: list[str]) -> int:
    """Export, then say what was written."""
    args = build_parser().parse_args(argv)
    if args.format == "hf":
        from overparam.cli.export_hf import export_folder

        meta = export_folder(args.run, args.to, force=args.force)
        print(f"wrote {args.to} ({meta['model']} as a Hugging Face folder, tokenizer: {meta['tokenizer']})")
        return 0
    if args.packed:
        meta = export_packed(args.run, args.to, force=args.force)
        print(f"wrote {args.to} ({len(meta['quantized'])} quantized weights, {meta['bytes']:,} bytes)")
        print(f"wrote {Path(args.to).with_suffix('.json')}", file=sys.stderr)
        return 0
    meta = export(args.run, args.to, shrink=not args.no_shrink, force=args.force)
    sparsity = f", {meta['sparsity']:.1%} of prunable weights zero" if meta["sparsity"] is not None else ""
    shrunk = f", shrunk to {meta['channels_kept']}" if meta["shrunk"] else ""
    print(f"wrote {args.to} ({len(meta['shapes'])} tensors, {meta['parameters']:,} parameters{sparsity}{shrunk})")
    print(f"wrote {Path(args.to).with_suffix('.json')}", file=sys.stderr)
    return 0

"""llm_prune on a small Llama-shaped `model=hf`: magnitude, Wanda and SparseGPT at 50% (and 2:4), with PERP's repair.

A preset cannot build a model folder, so this script does it: it saves a randomly initialized Llama
(transformers' LlamaForCausalLM: RMSNorm, rotary positions, SwiGLU MLP, no biases) with byte tokens (vocabulary
256, no tokenizer files: the folder's tokenizer is bytes), trains it with `runner train model=hf model.path=...`
on the default corpus with gpt_text's recipe, prunes the trained run with `method=oneshot prune.scope=layerwise`
(magnitude), `method=wanda` and `method=sparsegpt`, repairs each pruned run with `method=finetune
finetune.train=norm_bias` (PERP; a Llama has no biases, so only its RMSNorm weights train), and prints test
bits per byte:

    python scripts/llm_prune_hf.py --out /tmp/llama_prune            # ~width 64, 2 layers, 400 steps
    python scripts/llm_prune_hf.py --out /tmp/llama_prune --patterns 50 2:4 --repair-steps 0

Measured (`--patterns 50 2:4`, defaults otherwise: 2 layers, width 64, MLP 176, 4 heads, 133,440 parameters,
400 steps; 3 min 16 s on a shared 2-core CPU), test bits per byte, dense 2.0158; norm_bias 100 steps, the share
of the gap to the dense model it recovers, and its parameters trained (the 2 x 2 + 1 RMSNorm weight vectors,
320 entries: 0.384% of the 83,264 left after pruning, 0.24% of the model):

    method     pattern  pruned    loss  norm_bias recovered  trained
    magnitude  50       2.3441  0.3283     2.2466       30%   0.384%
    wanda      50       2.4330  0.4172     2.2977       32%   0.384%
    sparsegpt  50       2.2230  0.2072     2.1650       28%   0.384%
    magnitude  2:4      2.8246  0.8088     2.5811       30%   0.384%
    wanda      2:4      2.7783  0.7625     2.5509       30%   0.384%
    sparsegpt  2:4      2.3870  0.3712     2.3031       23%   0.384%

SparseGPT loses least: 0.21 bits at 50% (63% of magnitude's loss, not under half as in Wanda's Table 2) and
0.37 at 2:4 (46%, under half); Wanda is worse than magnitude at 50% and slightly better at 2:4; 2:4 costs
more than 50% for all three. With no biases to train, the norm-only repair recovers under a third of the gap here.

Every run is an ordinary run directory under --out (`runner table <out> --metric bpb` reads them); --out must
not exist yet. The commands run are printed as they start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = {"magnitude": ["method=oneshot", "prune.scope=layerwise"], "wanda": ["method=wanda"],
           "sparsegpt": ["method=sparsegpt"]}


def save_llama(folder: Path, width: int, layers: int, context: int) -> int:
    """A random Llama of `layers` decoder layers and hidden size `width`, byte vocabulary; its parameter count.
    The MLP's width is 8/3 of `width` rounded up to a multiple of 16, as Llama rounds it (to 256 there), so
    that N:M patterns divide every layer's rows."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=256, max_position_embeddings=context, hidden_size=width,
                                      intermediate_size=-(-width * 8 // 3 // 16) * 16, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=4, bos_token_id=0,
                                      eos_token_id=0, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def runner(args: list[str]) -> dict:
    """`runner train <args>` in a subprocess; the run's summary.json (the run dir is the last hydra.run.dir=)."""
    print("$ runner train " + " ".join(args), flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "overparam.cli.main", "train", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"runner failed ({done.returncode}):\n{done.stderr[-2000:]}")
    run_dir = next(a.split("=", 1)[1] for a in reversed(args) if a.startswith("hydra.run.dir="))
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the model and every run")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400, help="training steps of the dense model")
    parser.add_argument("--repair-steps", type=int, default=100, help="norm_bias steps after pruning (0: none)")
    parser.add_argument("--patterns", nargs="+", default=["50"], help="50, 70 (unstructured %%) and/or 2:4, 4:8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out} exists; give a new folder")
    args.out.mkdir(parents=True)
    folder = args.out / "llama"
    count = save_llama(folder, args.width, args.layers, context=64)
    print(f"saved a random Llama ({args.layers} layers, width {args.width}, {count:,} parameters) to {folder}")
    base = ["model=hf", f"model.path={folder}", "dataset=text", f"hardware.threads={args.threads}", "seed=0"]
    train = ["train.epochs=null", "train.batch_size=64", "optim.name=adamw", "optim.lr=0.003",
             "optim.weight_decay=0.01", "optim.schedule=cosine"]
    dense = runner([*base, *train, f"train.steps={args.steps}", f"train.eval_every={args.steps}",
                    "optim.warmup_steps=30", f"hydra.run.dir={args.out / 'dense'}"])
    rows = []
    for pattern in args.patterns:
        setting = [f"prune.pattern={pattern}", "sparsity=0.5"] if ":" in pattern else [f"sparsity={int(pattern) / 100}"]
        tag = pattern.replace(":", "_")
        for name, method in METHODS.items():
            pruned_dir = args.out / f"{name}_{tag}"
            pruned = runner([*base, *method, f"from={args.out / 'dense'}", *setting, f"hydra.run.dir={pruned_dir}"])
            row = {"method": name, "pattern": pattern, "pruned": pruned["test_bits_per_byte"]}
            if args.repair_steps:
                repaired = runner([*base, *train, "method=finetune", "finetune.train=norm_bias", f"from={pruned_dir}",
                                   f"train.steps={args.repair_steps}", f"train.eval_every={args.repair_steps}",
                                   "optim.warmup_steps=10", f"hydra.run.dir={args.out / f'{name}_{tag}_perp'}"])
                row.update(repaired=repaired["test_bits_per_byte"], fraction=repaired["trainable_fraction"],
                           sparsity=repaired.get("sparsity"))
            rows.append(row)
    print(f"\ntest bits per byte; dense {dense['test_bits_per_byte']:.4f}")
    print(f"{'method':<10} {'pattern':<7} {'pruned':>7} {'loss':>7}" + ("  {:>8} {:>9} {:>8}".format(
        "norm_bias", "recovered", "trained") if args.repair_steps else ""))
    for row in rows:
        gap = row["pruned"] - dense["test_bits_per_byte"]
        line = f"{row['method']:<10} {row['pattern']:<7} {row['pruned']:7.4f} {gap:7.4f}"
        if "repaired" in row:
            share = (row["pruned"] - row["repaired"]) / gap if gap > 0 else float("nan")
            line += f"  {row['repaired']:9.4f} {share:9.0%} {row['fraction']:8.3%}"
        print(line)


if __name__ == "__main__":
    main()

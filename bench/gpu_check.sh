#!/usr/bin/env bash
# The GPU path end to end, in under 5 minutes on one CUDA GPU (not a test; nothing here runs in CI):
#   1. triton vs torch parity on CUDA: forward, both gradients, exact zeros at masked weights;
#   2. a tiny `runner train hardware=cuda method=imp sparsity=0.9` (mnist1d, generated locally: no download);
#   3. the kernel benches: tile-sparse triton vs cuBLAS (block masks) and 2:4 semi-structured, fp16.
# Usage (from the repository root, with the project's environment active):
#   bash bench/gpu_check.sh [output folder, default ./gpu_check]
# Each step's log lands in the output folder; the script stops at the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The interpreter must be off: this checks the compiled kernels on the GPU.
unset TRITON_INTERPRET
export OVERPARAM_CACHE_DIR="$out/cache" OVERPARAM_DATA_DIR="${OVERPARAM_DATA_DIR:-$out/data}"

python - <<'PY' 2>&1 | tee "$out/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA GPU here: bench/gpu_check.sh needs one"
print("device:", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
      "torch", torch.__version__)
PY

echo "== 1. triton vs torch parity on CUDA" | tee "$out/parity.txt"
timeout 120 python - <<'PY' 2>&1 | tee -a "$out/parity.txt"
import torch
from overparam.kernels import masked_matmul, masked_matmul_reference
torch.manual_seed(0)
cases = [(1, 64, 64), (37, 300, 100), (128, 784, 300), (256, 1024, 1024), (64, 70, 45)]
worst = 0.0
for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)):
    for batch, inp, out in cases:
        for sparsity in (0.0, 0.5, 0.9, 0.99):
            x = torch.randn(batch, inp, device="cuda", dtype=dtype)
            w = torch.randn(out, inp, device="cuda", dtype=dtype)
            b = torch.randn(out, device="cuda", dtype=dtype)
            m = (torch.rand(out, inp, device="cuda") >= sparsity).to(dtype)
            g = torch.randn(batch, out, device="cuda", dtype=dtype)
            res = {}
            for backend in ("triton", "torch"):
                xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))
                y = masked_matmul(xs, ws, m, bs, backend=backend)
                y.backward(g)
                res[backend] = (y.float(), xs.grad.float(), ws.grad.float(), bs.grad.float())
            assert torch.all(res["triton"][2][m == 0] == 0), "masked weight gradient not exactly zero"
            for name, a, r in zip(("out", "grad_x", "grad_w", "grad_b"), res["triton"], res["torch"]):
                err = float((a - r).abs().max() / r.abs().max().clamp_min(1.0))
                worst = max(worst, err / tol)
                assert err <= tol, (str(dtype), batch, inp, out, sparsity, name, err)
print(f"parity ok: {len(cases) * 12} cases x 3 dtypes; worst error {worst:.2f} of tolerance")
PY

echo "== 2. tiny runner train on CUDA (imp, sparsity 0.9)" | tee "$out/train.txt"
start=$SECONDS
timeout 150 python -m overparam.cli.main train hardware=cuda method=imp sparsity=0.9 dataset=mnist1d \
  train.epochs=null train.steps=50 train.eval_every=50 "hydra.run.dir=$out/run" 2>&1 | tee -a "$out/train.txt"
echo "wall seconds: $((SECONDS - start))" | tee -a "$out/train.txt"
cat "$out/run/summary.json" | tee -a "$out/train.txt"

echo "== 3. kernel benches" | tee "$out/bench.txt"
timeout 90 python bench/kernels.py --device cuda --dtype float16 --pattern block --shapes square1024,square4096 \
  --sparsities 0,0.5,0.9,0.95 --backends torch,triton --repeats 10 2>&1 | tee -a "$out/bench.txt"
timeout 90 python bench/kernels.py --device cuda --dtype float16 --pattern two_four --shapes square1024,square4096 \
  --sparsities 0.5 --backends torch,sparse --repeats 10 2>&1 | tee -a "$out/bench.txt"
echo "gpu_check: all steps passed; logs in $out"

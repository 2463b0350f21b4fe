"""The calibration set of one-shot methods (Wanda, SparseGPT, GPTQ, AdaQuant, layer removal): a few
training examples drawn with their own seed, hashed so that two runs claiming the same set can be checked.

On text, `calib.samples` windows of `calib.seq_len` tokens are cut from the train split at random block and
offset (as locuslab/wanda and IST-DASLab/sparsegpt cut random windows from C4's train shards); on a
classifier's data, `calib.samples` train examples are drawn without replacement (`calib.seq_len` unused).
A method takes these settings by extending `overparam.specs.CALIB` (`calib.samples`, `calib.seq_len`,
`calib.seed`). The digest (SHA-256 of the dtype, shape and bytes of the drawn inputs) goes into run.json as `calibration`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from overparam.errors import UserError


@dataclass(frozen=True)
class Calibration:
    """Calibration inputs (token ids or examples, on the data's device) and their digest."""

    inputs: torch.Tensor
    digest: str
    samples: int
    seq_len: int | None
    seed: int

    def record(self) -> dict:
        """What run.json keeps of it."""
        return {"samples": self.samples, "seq_len": self.seq_len, "seed": self.seed, "sha256": self.digest}

    def batches(self, size: int):
        """The inputs in consecutive batches of at most `size`."""
        for start in range(0, len(self.inputs), size):
            yield self.inputs[start:start + size]


def digest(inputs: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and contents (device independent)."""
    data = inputs.detach().contiguous().cpu()
    h = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def draw(data, samples: int, seq_len: int | None = None, seed: int = 0) -> Calibration:
    """`samples` calibration inputs from `data`'s train split (see the module doc)."""
    generator = torch.Generator().manual_seed(int(seed))
    train_x = data.train_x
    if data.bytes_per_token:
        block = int(train_x.shape[1])
        length = block if seq_len is None else int(seq_len)
        if length > block:
            raise UserError(f"calib.seq_len={length} is longer than the dataset's blocks ({block} tokens); "
                            f"set calib.seq_len <= {block} or a larger dataset.block_size")
        available = int(train_x.numel())
        if samples * length > available:
            raise UserError(f"calib.samples={samples} x calib.seq_len={length} = {samples * length} calibration "
                            f"tokens; the train split holds {available}: ask for fewer")
        rows = torch.randint(len(train_x), (samples,), generator=generator)
        offsets = torch.randint(block - length + 1, (samples,), generator=generator)
        index = (offsets[:, None] + torch.arange(length)[None, :]).to(train_x.device)
        inputs = torch.gather(train_x[rows.to(train_x.device)], 1, index)
        used_len = length
    else:
        if samples > len(train_x):
            raise UserError(f"calib.samples={samples} exceeds the {len(train_x)} training examples")
        rows = torch.randperm(len(train_x), generator=generator)[:samples]
        inputs = train_x[rows.to(train_x.device)]
        used_len = None
    return Calibration(inputs=inputs, digest=digest(inputs), samples=int(samples), seq_len=used_len, seed=int(seed))


def from_params(params, data, run=None) -> Calibration:
    """The calibration set named by a method's `calib.*` parameters; recorded in `run`'s run.json."""
    calibration = draw(data, params["calib.samples"], params["calib.seq_len"], params["calib.seed"])
    if run is not None:
        run.record("calibration", calibration.record())
    return calibration

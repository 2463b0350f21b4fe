"""Sharpness-aware training, an option of `fit` usable by every method.

- SAM (Foret et al. 2021), `optim.sam=true`: each step takes the gradient at the point
  `w + rho * g / ||g||` (two forward/backward passes per step, about twice the cost).
- SAF (Du et al. 2022, "Sharpness-Aware Training for Free"), `optim.saf=<weight>`: adds
  `weight * tau^2 * KL(softmax(z_past / tau) || softmax(z / tau))`, where `z_past` are the
  model's own outputs on the same examples `optim.saf_lag` epochs earlier (a trajectory loss:
  one pass per step plus a memory bank of outputs, about the base optimizer's cost).

Both are off when their keys are null/false, and `fit` is then exactly what it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from overparam.errors import UserError
from overparam.models.taps import FeatureTap

DEFAULT_RHO = 0.05
OUTPUT = (".", "output")  # the model's own output


class Sharpness:
    """SAM's second pass and SAF's trajectory term for one training phase."""

    def __init__(self, model: torch.nn.Module, *, sam: bool, rho: float, saf_weight: float, saf_lag: int,
                 saf_temperature: float, num_examples: int):
        self.model = model
        self.sam = sam
        self.rho = rho
        self.saf_weight = saf_weight
        self.saf_lag = saf_lag
        self.saf_temperature = saf_temperature
        self.num_examples = num_examples
        # Outputs of the last `saf_lag + 1` epochs, one slot per epoch modulo the ring size.
        self.bank: torch.Tensor | None = None
        self.bank_epoch: torch.Tensor | None = None
        # SAF reads the model's output of the step's forward (the logits the loss was computed on).
        self._tap = FeatureTap(model, [OUTPUT]) if saf_weight > 0 else None

    @classmethod
    def from_config(cls, model, optim, num_examples: int) -> "Sharpness | None":
        """A Sharpness for `optim`, or None when neither SAM nor SAF is switched on."""
        sam = bool(optim.get("sam") or False)
        saf_weight = float(optim.get("saf") or 0.0)
        if not sam and saf_weight == 0.0:
            return None
        rho = float(optim.get("sam_rho") if optim.get("sam_rho") is not None else DEFAULT_RHO)
        lag = int(optim.get("saf_lag") if optim.get("saf_lag") is not None else 1)
        temperature = float(optim.get("saf_temperature") or 1.0)
        if rho <= 0 or lag < 1 or temperature <= 0 or saf_weight < 0:
            raise UserError("optim.sam_rho and optim.saf_temperature must be > 0, optim.saf >= 0, optim.saf_lag >= 1")
        return cls(model, sam=sam, rho=rho, saf_weight=saf_weight, saf_lag=lag, saf_temperature=temperature,
                   num_examples=num_examples)

    # --- SAF -----------------------------------------------------------------------------
    def add_trajectory_term(self, loss: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """`loss` plus SAF's KL to the outputs these examples had `saf_lag` epochs ago (stores today's)."""
        outputs = self._tap.pop(OUTPUT) if self._tap is not None else None
        if outputs is None:
            return loss
        ring = self.saf_lag + 1
        if self.bank is None:
            self.bank = torch.zeros(ring, self.num_examples, outputs.shape[-1], device=outputs.device)
            # A sentinel no epoch - lag can equal (epoch 0 minus a lag of 1 is -1).
            self.bank_epoch = torch.full((ring, self.num_examples), -(2 ** 62), dtype=torch.long, device=outputs.device)
        past_slot = (epoch - self.saf_lag) % ring
        past_epoch = self.bank_epoch[past_slot, index]
        have_past = past_epoch == epoch - self.saf_lag
        term = loss.new_zeros(())
        if bool(have_past.any()):
            tau = self.saf_temperature
            past = self.bank[past_slot, index][have_past].float()
            current = outputs[have_past].float()
            term = F.kl_div(F.log_softmax(current / tau, dim=-1), F.log_softmax(past / tau, dim=-1),
                            reduction="batchmean", log_target=True) * tau * tau
            # Averaged over the whole batch, so a half-covered batch weighs half.
            term = term * have_past.float().mean()
        slot = epoch % ring
        self.bank[slot, index] = outputs.detach().float()
        self.bank_epoch[slot, index] = epoch
        return loss + self.saf_weight * term

    # --- SAM -----------------------------------------------------------------------------
    def second_pass(self, params: list[torch.Tensor], compute_loss) -> None:
        """Replace the gradients in `params` by those at the SAM-perturbed weights."""
        if not self.sam:
            return
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        grad_norm = torch.norm(torch.stack([p.grad.detach().float().norm() for p in with_grad]))
        scale = self.rho / (grad_norm + 1e-12)
        perturbations = []
        with torch.no_grad():
            for p in with_grad:
                e = p.grad.detach() * scale.to(p.dtype)
                p.add_(e)
                perturbations.append(e)
        for p in with_grad:
            p.grad = None
        compute_loss().backward()
        with torch.no_grad():
            for p, e in zip(with_grad, perturbations):
                p.sub_(e)

    # --- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        """SAF's memory bank (SAM has no state), saved with fit's resume checkpoint."""
        if self.bank is None:
            return None
        return {"bank": self.bank, "bank_epoch": self.bank_epoch}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.bank, self.bank_epoch = state["bank"], state["bank_epoch"]

    def close(self) -> None:
        if self._tap is not None:
            self._tap.remove()
            self._tap = None

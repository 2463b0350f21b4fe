"""`method=random_features`: a random ReLU features model fit exactly by least squares, for double descent.

phi(x) = relu(x V / sqrt(d)) with V ~ N(0, 1)^(d x width) drawn from the run's seed and never trained;
the readout W minimizes ||phi(X) W - onehot(y)||^2 over the training examples, and among the
minimizers (width > samples) has the least norm (`ridge: 0`, the pseudo-inverse), or solves the ridge
problem (`ridge > 0`). The fit is exact, so a width sweep traces the test-error curve with no
optimizer in the way: it peaks where the model can first fit every (noisy) label, width = samples,
and falls again beyond it (Belkin et al. 2019; Nakkiran et al. 2020; Mei & Montanari 2022).
"""

from __future__ import annotations

from overparam.errors import UserError


def features(x, projection):
    """relu(x V / sqrt(d)) in float64 (inputs flattened)."""
    x = x.reshape(len(x), -1).double()
    return (x @ projection / x.shape[1] ** 0.5).relu()


def fit_readout(phi, targets, ridge: float = 0.0):
    """Least-squares readout: the minimum-norm solution (ridge 0, pseudo-inverse by SVD) or the ridge one."""
    import torch

    if ridge > 0:
        n, width = phi.shape
        if width > n:  # the kernel form solves an n x n system
            return phi.T @ torch.linalg.solve(phi @ phi.T + ridge * torch.eye(n, dtype=phi.dtype, device=phi.device), targets)
        return torch.linalg.solve(phi.T @ phi + ridge * torch.eye(width, dtype=phi.dtype, device=phi.device), phi.T @ targets)
    return torch.linalg.pinv(phi) @ targets


def scores(phi, readout, y, num_classes: int) -> dict:
    """Accuracy, error (1 - accuracy) and squared loss against one-hot targets."""
    import torch.nn.functional as F

    out = phi @ readout
    accuracy = float((out.argmax(dim=1) == y).double().mean())
    mse = float(((out - F.one_hot(y, num_classes).double()) ** 2).sum(dim=1).mean())
    return {"accuracy": accuracy, "error": 1.0 - accuracy, "mse": mse}


def run(params, context) -> dict:
    """Draw the features, fit the readout on (a seeded subset of) train, score train, val and test."""
    import torch
    import torch.nn.functional as F

    settings, run = context.settings, context.run
    setup = context.prepare()
    data = setup.data
    width = params["random_features.width"]
    generator = torch.Generator().manual_seed(int(settings.seed))
    x, y = data.train_x, data.train_y
    samples = params["random_features.train_samples"]
    if samples is not None:
        if int(samples) > len(x):
            raise UserError(f"random_features.train_samples={samples} but the training split has {len(x)} examples")
        chosen = torch.randperm(len(x), generator=generator)[: int(samples)].to(x.device)
        x, y = x[chosen], y[chosen]
    dim = int(x[0].numel())
    projection = torch.randn(dim, width, generator=generator, dtype=torch.float64).to(x.device)
    phi = features(x, projection)
    readout = fit_readout(phi, F.one_hot(y, data.num_classes).double(), params["random_features.ridge"])
    summary = {"width": width, "train_samples": len(x), "parameters": width * data.num_classes,
               "samples_per_parameter": len(x) / (width * data.num_classes)}
    for split, (split_x, split_y) in {"train": (x, y), **data.splits()}.items():
        summary.update({f"{split}_{k}": v for k, v in
                        scores(features(split_x, projection), readout, split_y, data.num_classes).items()})
    run.save_checkpoint("model", {"projection": projection.float(), "readout": readout.float()})
    return {**summary, **data.notes}

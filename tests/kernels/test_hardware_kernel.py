"""`hardware.kernel` selects the masked-matmul backend for a whole run."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from overparam import kernels
from overparam.errors import UserError


@pytest.mark.parametrize("kernel", ["sparse", "torch", "triton", "auto"])
def test_prepare_sets_the_run_backend(kernel):
    from overparam.cli.train import compose_checked
    from overparam.recipes.common import prepare

    cfg = OmegaConf.create(compose_checked([f"hardware.kernel={kernel}"]))
    kernels.set_default_backend("torch" if kernel != "torch" else "sparse")
    prepare(cfg)
    assert kernels.get_default_backend() == kernel


def test_an_unknown_kernel_is_a_user_error():
    from overparam.cli.train import compose_checked

    with pytest.raises(UserError, match="hardware.kernel"):
        compose_checked(["hardware.kernel=cusparse"])

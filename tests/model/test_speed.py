"""model.speed: channels-last on 4-D weights of P3D/3D networks, autocast choice, fused-optimiser
fallback, portable optimiser state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.config import LossConfig
from model.depthgait import build_model
from model.losses import GaitLoss
from model.speed import accelerate, autocast_dtype, portable_optimizer_state, sgd
from tests.model.conftest import contract_inputs, tiny_model_config


@pytest.mark.parametrize("block", ["p3d", "3d", "2d"])
def test_channels_last_on_conv2d_weights_keeps_outputs(block):
    torch.manual_seed(0)
    net = build_model(tiny_model_config(block=block)).eval()
    sils, _ = contract_inputs(2, 6)
    with torch.no_grad():
        before = net(sils=sils)["embedding"]
    fast = accelerate(net, "cpu", amp=False)
    conv2d = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert fast.channels_last_convs == len(conv2d) > 0
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in conv2d)
    assert all(m.weight.is_contiguous() for m in net.modules() if isinstance(m, nn.Conv3d))
    with torch.no_grad():
        after = fast.forward(sils=sils)["embedding"]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block", ["p3d", "3d"])
def test_whole_module_channels_last_fails_on_rank5_weights(block):
    # Why accelerate() converts the 4-D weights only.
    with pytest.raises(RuntimeError):
        build_model(tiny_model_config(block=block)).to(memory_format=torch.channels_last)


def test_training_step_under_autocast_matches_fp32_closely():
    torch.manual_seed(0)
    cfg = tiny_model_config()
    net = build_model(cfg).train()
    reference = build_model(cfg).train()
    reference.load_state_dict(net.state_dict())
    sils, _ = contract_inputs(4, 6)
    labels = torch.tensor([0, 0, 1, 1])
    criterion = GaitLoss(LossConfig())

    fast = accelerate(net, "cpu", amp=True)
    opt = sgd(net.parameters(), "cpu", lr=0.01, momentum=0.9)
    with fast.autocast():
        loss, _ = criterion(fast.forward(sils=sils), labels)
    opt.zero_grad()
    fast.scaler.scale(loss).backward()
    fast.scaler.step(opt)
    fast.scaler.update()
    ref_loss, _ = criterion(reference(sils=sils), labels)
    assert torch.isfinite(loss)
    assert abs(float(loss.detach()) - float(ref_loss.detach())) < 0.05 * float(ref_loss.detach())
    assert not fast.scaler.is_enabled(), "bf16 or fp32 on CPU: no GradScaler"
    assert not fast.compiled, "compile is CUDA-only by default (slower on CPU)"
    # The channels-last weights train: their gradients exist and keep the layout.
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.grad is not None
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_autocast_dtype_choices():
    assert autocast_dtype(torch.device("cpu")) in (torch.bfloat16, None)
    fast = accelerate(nn.Conv2d(1, 2, 3), "cpu", amp=False)
    assert fast.amp_dtype is None and fast.describe()["autocast"] == "off"


def test_sgd_falls_back_and_state_is_portable():
    net = nn.Linear(3, 2)
    opt = sgd(net.parameters(), "cpu", lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    opt.param_groups[0]["fused"] = True  # as written on a GPU
    state = portable_optimizer_state(opt)
    assert state["param_groups"][0]["fused"] is None
    fresh = torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(state)
    assert len(fresh.state) == 2, "momentum buffers came along"

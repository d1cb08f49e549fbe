"""Build OpenGait's own DeepGaitV2 / Baseline from a source snapshot, for the parity harness.

Imports OpenGait's real modules (base_model, modules, backbones/resnet, models/deepgaitv2,
models/baseline, data/transform, data/collate_fn, utils) from OPENGAIT_SRC/opengait. Only what the
environment lacks and forward does not need is stubbed:
  - torch.utils.tensorboard (msg_manager's SummaryWriter, used for training logs);
  - torchvision's compiled ops (the CPU torch here cannot load the CUDA build's _C; forward of
    these models uses no torchvision op, only torchvision.models.resnet's Python blocks);
  - utils.common.ts2var's .cuda() (np2var moves inputs to the GPU; we run on CPU);
  - BaseModel.__init__ (builds data loaders, DDP, optimiser): the model is made with
    nn.Module.__init__ + build_network, exactly the network BaseModel.__init__ would build.
The packages `modeling.models` / `modeling.losses` are created without running their
__init__ (which imports every model of the zoo and their optional dependencies).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
import torch.library


def load_opengait(src: Path):
    root = Path(src) / "opengait"
    if not (root / "modeling" / "models" / "deepgaitv2.py").exists():
        raise SystemExit(f"{root} is not an OpenGait source tree")
    sys.path.insert(0, str(root))

    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = type("SummaryWriter", (), {"__init__": lambda self, *a, **k: None})
    sys.modules["torch.utils.tensorboard"] = tb

    original = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda f: f)
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original

    from utils import common

    common.ts2var = lambda x, **kwargs: torch.autograd.Variable(x, **kwargs)

    for pkg in ("modeling.models", "modeling.losses"):
        module = types.ModuleType(pkg)
        module.__path__ = [str(root / pkg.replace(".", "/"))]
        sys.modules[pkg] = module
    importlib.import_module("modeling.backbones")  # its real __init__: registers ResNet9, Plain, ...
    for name in ("base", "triplet", "ce"):
        importlib.import_module(f"modeling.losses.{name}")
    base_model = importlib.import_module("modeling.base_model")
    deepgaitv2 = importlib.import_module("modeling.models.deepgaitv2")
    baseline = importlib.import_module("modeling.models.baseline")
    transform = importlib.import_module("data.transform")
    collate = importlib.import_module("data.collate_fn")
    return types.SimpleNamespace(
        BaseModel=base_model.BaseModel, DeepGaitV2=deepgaitv2.DeepGaitV2, Baseline=baseline.Baseline,
        get_transform=transform.get_transform, CollateFn=collate.CollateFn,
    )


def build(og, cfgs: dict):
    """The network OpenGait's BaseModel.__init__ builds for `cfgs` (no loaders, no CUDA)."""
    cls = {"DeepGaitV2": og.DeepGaitV2, "Baseline": og.Baseline}[cfgs["model_cfg"]["model"]]
    model = cls.__new__(cls)
    torch.nn.Module.__init__(model)
    model.cfgs = cfgs
    model.engine_cfg = cfgs["evaluator_cfg"]
    model.build_network(cfgs["model_cfg"])
    model.init_parameters()
    model.evaluator_trfs = og.get_transform(cfgs["evaluator_cfg"]["transform"])
    model.trainer_trfs = og.get_transform(cfgs["trainer_cfg"]["transform"])
    return model.eval()

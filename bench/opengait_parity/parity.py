"""Parity of gaitid's converted OpenGait models against OpenGait's own code, on real CASIA-B sequences.

For each architecture: build OpenGait's network from its source snapshot (opengait_loader.py), give it
random weights with non-trivial BatchNorm statistics, save an OpenGait-format checkpoint (some with
DDP's `module.` prefix, some fp16), convert it with gaitid's converter (a subprocess in gaitid's own
environment: nothing of gaitid is imported here), then embed the same CASIA-B sequences with OpenGait
(its transform, collate and inputs_pretreament, eval mode, `inference_feat['embeddings']`) and with the
ONNX file (uint8 frames trimmed 10 px each side, as the contract feeds them). Prints the max abs
difference per architecture.

    python parity.py --opengait-src SRC --casia-root DIR --work DIR --convert "gaitid models convert-opengait {ckpt} {out} --arch {arch} {config_option}"
"""

from __future__ import annotations

import argparse
import json
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opengait_loader import build, load_opengait

# (name, OpenGait config, DeepGaitV2 mode, use_emb2, checkpoint format, pass the YAML to the converter)
CASES = [
    ("deepgaitv2-2d", "deepgaitv2/DeepGaitV2_casiab.yaml", "2d", False, "fp16", True),
    ("deepgaitv2-p3d", "deepgaitv2/DeepGaitV2_casiab.yaml", "p3d", False, "ddp", True),
    ("deepgaitv2-3d", "deepgaitv2/DeepGaitV2_casiab.yaml", "3d", False, "plain", False),
    ("gaitbase", "gaitbase/gaitbase_da_casiab.yaml", None, False, "ddp+fp16", True),
    ("deepgaitv2-p3d", "deepgaitv2/DeepGaitV2_gait3d.yaml", "p3d", True, "plain", True),  # [1,4,4,1], use_emb2
]
# Real CASIA-B sequences and how many of their frames to use (None: all).
SEQUENCES = [("042/bg-01/144", 10), ("004/cl-02/144", 30), ("024/nm-01/090", None)]
CUT = 10  # BaseSilCuttingTransform: int(64 // 64) * 10 px off each side


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random weights (OpenGait's xavier init already ran) and BatchNorm statistics far from identity."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 10**5, (1,), generator=generator)))


def save_checkpoint(model: torch.nn.Module, path: Path, fmt: str, iteration: int) -> dict:
    """OpenGait's BaseModel.save_ckpt layout; returns the state exactly as stored."""
    state = model.state_dict()
    if "fp16" in fmt:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if "ddp" in fmt:
        state = {"module." + k: v for k, v in state.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[20000, 40000])
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "iteration": iteration}, path)
    return state


def opengait_embed(og, model, cfgs, sequence: np.ndarray) -> np.ndarray:
    """OpenGait's evaluation path for one sequence: CollateFn (all_ordered) -> inputs_pretreament
    (evaluator transform) -> forward -> inference_feat['embeddings']."""
    collate = og.CollateFn(["subject"], cfgs["evaluator_cfg"]["sampler"])
    batch = collate([([sequence], ("subject", "nm-01", "090"))])
    with torch.no_grad():
        ipts = model.inputs_pretreament(batch)
        return model.forward(ipts)["inference_feat"]["embeddings"].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opengait-src", type=Path, required=True)
    parser.add_argument("--casia-root", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--convert", required=True,
                        help="converter command with {ckpt} {out} {arch} and {config_option} ('--config YAML' or empty)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(1)
    og = load_opengait(args.opengait_src)
    commit_file = args.opengait_src / "COMMIT"
    print(f"OpenGait {commit_file.read_text().strip() if commit_file.exists() else '(commit unknown)'}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    sequences = []
    for name, frames in SEQUENCES:
        with open(args.casia_root / name / f"{name.split('/')[-1]}.pkl", "rb") as fh:
            array = pickle.load(fh)
        sequences.append((name, array[:frames] if frames else array))
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for i, (arch, config_file, mode, use_emb2, fmt, pass_config) in enumerate(CASES):
        cfgs = yaml.safe_load((args.opengait_src / "configs" / config_file).read_text())
        if mode:
            cfgs["model_cfg"]["Backbone"]["mode"] = mode
        if use_emb2:
            cfgs["model_cfg"]["use_emb2"] = True
        config_path = args.work / f"case{i}_{Path(config_file).name}"
        config_path.write_text(yaml.safe_dump(cfgs))
        model = build(og, cfgs)
        randomise(model, generator)
        ckpt = args.work / f"case{i}_{arch}.pt"
        stored = save_checkpoint(model, ckpt, fmt, iteration=60000)
        # OpenGait evaluates what it restores: the stored (possibly fp16) weights, loaded into its model.
        model.load_state_dict({k.removeprefix("module."): v for k, v in stored.items()})
        model.eval()

        out = args.work / f"case{i}_{arch}.onnx"
        command = args.convert.format(ckpt=ckpt, out=out, arch=arch,
                                      config_option=f"--config {config_path}" if pass_config else "")
        run = subprocess.run(shlex.split(command), check=False, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"conversion failed for {arch}:\n{run.stdout}\n{run.stderr}")
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        worst, scale, control, lengths = 0.0, 0.0, 0.0, []
        for name, array in sequences:
            expected = opengait_embed(og, model, cfgs, array)
            (got,) = session.run(["embedding"], {"sils": np.ascontiguousarray(array[None, :, :, CUT:-CUT])})
            assert got.shape == expected.shape, (got.shape, expected.shape)
            worst = max(worst, float(np.abs(got - expected).max()))
            # Control: the same frames cropped one pixel off-centre must not pass as equal.
            (shifted,) = session.run(["embedding"], {"sils": np.ascontiguousarray(array[None, :, :, CUT - 1:-CUT - 1])})
            control = max(control, float(np.abs(shifted - expected).max()))
            scale = max(scale, float(np.abs(expected).max()))
            lengths.append(len(array))
        rows.append({"architecture": arch, "opengait_config": config_file, "mode": mode or "ResNet9",
                     "layers": (cfgs["model_cfg"].get("Backbone") or cfgs["model_cfg"]["backbone_cfg"])["layers"],
                     "use_emb2": use_emb2, "checkpoint": fmt, "yaml_given": pass_config, "frames": lengths,
                     "max_abs_diff": worst, "max_abs_embedding": scale, "control_1px_shift": control})
        print(f"{arch:15s} {Path(config_file).name:28s} ckpt={fmt:9s} yaml={pass_config!s:5s} "
              f"emb2={use_emb2!s:5s} frames={lengths} max|diff|={worst:.2e} (max|emb|={scale:.2f}, "
              f"1-px-shift control {control:.2e})", flush=True)
    (args.work / "parity.json").write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if r["max_abs_diff"] > 1e-4]
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()

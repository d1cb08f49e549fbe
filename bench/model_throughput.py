"""Training and inference throughput of the gait network (frames/s), torch vs ONNX Runtime.

    python bench/model_throughput.py [--widths 8 64] [--layers 1 1 1 1] [--threads 1] [--device cpu|cuda]

Random weights (speed does not depend on them). On CPU report ratios measured in one run; absolute
figures are only comparable on the same machine under the same load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gaitid.contract import INPUT_MAX, ModelInput
from model.config import ExperimentConfig, ModelConfig
from model.depthgait import build_model
from model.export import export_module
from model.train import build_trainer, train_step
from service.pipeline.embed import OnnxEmbedder


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN/ORT kernel selection)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def train_fps(cfg: ModelConfig, device: torch.device, batch: tuple[int, int, int], repeats: int,
              accelerated: bool) -> tuple[float, float]:
    """Frames/s of `gaitid train`'s own step (model.train.train_step) on a fixed batch, plain fp32
    (`accelerated` False: what training did before model.speed) or as model.speed makes it; and the
    loss after the same steps from the same initial weights, to show the speed costs no learning."""
    p, k, frames = batch
    exp = ExperimentConfig.model_validate({
        "model": cfg.model_dump(), "data": {"frames": frames, "batch_subjects": p, "batch_per_subject": k},
        "optim": {"lr": 0.01, "milestones": [10**6]},
        "trainer": {"amp": accelerated, "channels_last": accelerated, "compile": False},
    })
    torch.manual_seed(0)
    trainer = build_trainer(exp, device)
    generator = torch.Generator().manual_seed(1)
    # uint8 like the training batches (the network scales them)
    batch_tensors = {
        "sils": (torch.rand(p * k, frames, 64, 44, generator=generator) > 0.5).to(torch.uint8) * INPUT_MAX,
        "depths": torch.randint(0, INPUT_MAX + 1, (p * k, frames, 64, 44), dtype=torch.uint8, generator=generator),
        "labels": torch.arange(p).repeat_interleave(k),
    }
    batch_tensors = {name: t.to(device) for name, t in batch_tensors.items()}
    losses = []

    def step():
        losses.append(train_step(trainer, batch_tensors)["loss"])
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = timed(step, repeats)
    return p * k * frames / seconds, float(losses[-1])


def inference_fps(cfg: ModelConfig, frames: int, repeats: int, threads: int) -> tuple[float, float]:
    model = build_model(cfg).eval()
    sils = (torch.rand(1, frames, 64, 44) > 0.5).to(torch.uint8) * INPUT_MAX
    depths = torch.randint(0, INPUT_MAX + 1, (1, frames, 64, 44), dtype=torch.uint8)
    with torch.inference_mode():
        torch_s = timed(lambda: model(sils=sils, depths=depths), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_module(model, path)
        embedder = OnnxEmbedder(path, providers="cpu", threads=threads)
        sequence = [ModelInput(sils=sils[0].numpy(), depths=depths[0].numpy() if embedder.metadata.needs_depth else None)]
        ort_s = timed(lambda: embedder.embed(sequence), repeats)
    return frames / torch_s, frames / ort_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--layers", type=int, nargs=4, default=[1, 1, 1, 1],
                        help="blocks per stage (model/configs: [1, 1, 1, 1], OpenGait's CASIA-B DeepGaitV2)")
    parser.add_argument("--variants", nargs="+", default=["silhouette", "mcf"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fast-threads", type=int, default=2,
                        help="also time the fast step with this many threads (0: don't), in the same run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=60, help="sequence length for inference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = (8, 4, 20) if device.type == "cpu" else (8, 16, 30)

    print(f"device={device} threads={args.threads} train batch PxKxframes={batch} inference frames={args.frames}")
    print("train: fp32 = the plain step; fast = model.speed (autocast where the hardware has it, channels-last "
          f"conv weights); loss after the {args.repeats + 1} same steps from the same weights")
    many = args.fast_threads if args.fast_threads and args.fast_threads != args.threads else 0
    print("| variant | width | layers | train fp32 frames/s | train fast frames/s | fast/fp32 "
          + (f"| fast, {many} threads | /fp32 " if many else "")
          + "| loss fp32 / fast | torch infer frames/s | ORT infer frames/s | ORT/torch |")
    print("|---|---|---|---|---|---|" + ("---|---|" if many else "") + "---|---|---|---|")
    for width in args.widths:
        layers = args.layers
        for variant in args.variants:
            cfg = ModelConfig(variant=variant, width=width, layers=layers, num_classes=68)
            plain, plain_loss = train_fps(cfg, device, batch, args.repeats, accelerated=False)
            fast, fast_loss = train_fps(cfg, device, batch, args.repeats, accelerated=True)
            threaded = ""
            if many:
                torch.set_num_threads(many)
                fast_many, _ = train_fps(cfg, device, batch, args.repeats, accelerated=True)
                torch.set_num_threads(args.threads)
                threaded = f"| {fast_many:.1f} | {fast_many / plain:.2f} "
            t_fps, o_fps = inference_fps(cfg, args.frames, args.repeats, args.threads)
            print(f"| {variant} | {width} | {layers} | {plain:.1f} | {fast:.1f} | {fast / plain:.2f} {threaded}"
                  f"| {plain_loss:.3f} / {fast_loss:.3f} | {t_fps:.1f} | {o_fps:.1f} | {o_fps / t_fps:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()

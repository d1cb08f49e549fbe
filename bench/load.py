"""Load test of POST /identify over real HTTP: throughput and latency at 1, 4 and 16 concurrent
clients, with and without cross-request batching of the embedding network.

For each mode the script starts the service (uvicorn, `service.app:create_app`) as a subprocess on
a free port of 127.0.0.1 over a fresh data directory, enrolls the clips' subjects, sends one
warm-up request, then runs each concurrency level with an httpx async client and a fixed number of
requests (bounded: the whole default run is ~100 requests), and stops the server.

    python bench/load.py                                  # CASIA-B 002 clip, both modes
    python bench/load.py --clips 002 003 004              # mixed clips (unequal sequence lengths)
    python bench/load.py --model models/x.onnx --levels 1 4 --requests-per-client 3

Embedding model: --model, else the shipped one (service.pipeline.config.SHIPPED_EMBEDDING_MODEL), else a randomly
initialised DeepGaitV2 of the CPU config exported to bench/out/ (needs the `train` extra). A random
model is fine for timing: the network's cost does not depend on its weights.

Batching only ever groups sequences of equal length (padding would change the embedding), so with
one clip every request has the same length: the best case for batching.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.service_process import ServiceProcess

CASIA_VIDEOS = REPO.parent / "shared" / "data" / "videos" / "casia-b"
OUT = REPO / "bench" / "out"


@dataclass
class LevelResult:
    batching: bool
    clients: int
    requests: int
    seconds: float
    latencies_s: list[float]
    errors: int
    mean_batch: float | None
    stage_ms: dict[str, float]  # server-reported mean time per stage (embed, queue, ...)

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.array(self.latencies_s) * 1000.0, q)) if self.latencies_s else float("nan")


# -- the model ---------------------------------------------------------------------------------------
def embedding_model(requested: Path | None) -> tuple[Path, str]:
    if requested is not None:
        return requested, f"{requested.name} (given)"
    from service.pipeline.config import SHIPPED_EMBEDDING_MODEL

    if SHIPPED_EMBEDDING_MODEL.exists():
        return SHIPPED_EMBEDDING_MODEL, f"{SHIPPED_EMBEDDING_MODEL.name} (shipped)"
    path = OUT / "deepgaitv2-sil-cpu-random.onnx"
    if not path.exists():
        export_random_model(path)
    return path, f"{path.name} (random weights, DeepGaitV2 CPU config: timing only)"


def export_random_model(path: Path) -> None:
    try:
        import torch

        from model.config import load_config
        from model.depthgait import build_model
        from model.embedder import network_metadata
        from model.export import export_module
    except ImportError as error:
        sys.exit(f"no embedding model: pass --model, or install the train extra to export one ({error})")

    torch.manual_seed(0)
    cfg = load_config(REPO / "model" / "configs" / "deepgaitv2_sil_casiab_cpu.yaml")
    metadata = network_metadata(cfg.model, training_data="none: random initialisation, for benchmarks only")
    export_module(build_model(cfg.model), path, metadata)


# -- the load -----------------------------------------------------------------------------------------
async def identify(client: httpx.AsyncClient, name: str, video: bytes) -> tuple[float, dict[str, float]]:
    """(latency seconds, the server's stage timings in ms)."""
    started = time.perf_counter()
    response = await client.post("/identify", files={"video": (name, video, "video/x-msvideo")})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"/identify answered {response.status_code}: {response.text[:300]}")
    return elapsed, response.json()["timings_ms"]


async def run_level(url: str, clips: list[tuple[str, bytes]], clients: int, requests: int
                    ) -> tuple[float, list[float], int, dict[str, float]]:
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    errors = 0
    next_request = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_request, errors
        while next_request < requests:
            name, video = clips[next_request % len(clips)]
            next_request += 1
            try:
                latency, timings = await identify(client, name, video)
                latencies.append(latency)
                for stage, ms in timings.items():
                    stages.setdefault(stage, []).append(ms)
            except (RuntimeError, httpx.HTTPError) as error:
                errors += 1
                print(f"  error: {error}", file=sys.stderr)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600.0, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return seconds, latencies, errors, {stage: float(np.mean(v)) for stage, v in stages.items()}


def mean_batch_size(url: str) -> tuple[float, float]:
    """(sum, count) of the server's embedding batch-size histogram (0, 0 without batching)."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    total = re.search(r"^gaitid_embedding_batch_size_sum (\S+)$", text, re.MULTILINE)
    count = re.search(r"^gaitid_embedding_batch_size_count (\S+)$", text, re.MULTILINE)
    return (float(total.group(1)) if total else 0.0), (float(count.group(1)) if count else 0.0)


def run_mode(batching: bool, args: argparse.Namespace, model: Path, clips: list[tuple[str, bytes]],
             workdir: Path) -> list[LevelResult]:
    data_dir = workdir / f"data-batching-{batching}"
    env = {
        "GAITID_DATA_DIR": str(data_dir), "GAITID_EMBEDDING_MODEL": str(model), "GAITID_PROVIDERS": "cpu",
        "GAITID_THREADS": "1", "GAITID_SEGMENTER": "bgsub", "GAITID_API_KEYS": "",
        "GAITID_EMBED_BATCHING": str(batching).lower(), "GAITID_EMBED_BATCH_WAIT_MS": str(args.batch_wait_ms),
        "GAITID_EMBED_BATCH_MAX": str(args.batch_max),
        "GAITID_MAX_CONCURRENT_CLIPS": str(args.max_concurrent_clips), "OMP_NUM_THREADS": "1",
        # The same clips are sent over and over: with the clip cache on, every request after the first
        # would be answered without running the pipeline, and the load test would measure the cache.
        "GAITID_CLIP_CACHE_MB": "0",
    }
    if args.background:
        env["GAITID_BACKGROUND_CLIP"] = str(args.background)
    results = []
    with ServiceProcess(env, workdir / f"server-batching-{batching}.log") as server:
        server.wait_ready(not_ready_grace_s=10.0, poll_s=0.2)
        for name, video in clips:  # a non-empty gallery, so every request also searches
            response = httpx.post(f"{server.url}/enroll", data={"subject_id": Path(name).stem},
                                  files={"video": (name, video)}, timeout=600.0)
            response.raise_for_status()
        asyncio.run(run_level(server.url, clips[:1], 1, 1))  # warm-up: first-call allocations
        for clients in args.levels:
            before = mean_batch_size(server.url)
            requests = clients * args.requests_per_client
            seconds, latencies, errors, stage_ms = asyncio.run(run_level(server.url, clips, clients, requests))
            after = mean_batch_size(server.url)
            batches = after[1] - before[1]
            mean_batch = (after[0] - before[0]) / batches if batches else None
            result = LevelResult(batching, clients, requests, seconds, latencies, errors, mean_batch, stage_ms)
            results.append(result)
            print(f"  batching={'on' if batching else 'off'} clients={clients:>2}: "
                  f"{result.throughput:.2f} req/s, p50 {result.percentile_ms(50):.0f} ms", flush=True)
    return results


def table(results: list[LevelResult]) -> str:
    lines = [("| batching | clients | requests | req/s | p50 ms | p90 ms | p99 ms | errors | mean batch "
             "| queue ms | segment ms | embed ms |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        batch = "-" if r.mean_batch is None else f"{r.mean_batch:.2f}"
        stages = " | ".join(f"{r.stage_ms.get(s, float('nan')):.0f}" for s in ("queue", "segment", "embed"))
        lines.append(f"| {'on' if r.batching else 'off'} | {r.clients} | {r.requests} | {r.throughput:.2f} | "
                     f"{r.percentile_ms(50):.0f} | {r.percentile_ms(90):.0f} | {r.percentile_ms(99):.0f} | "
                     f"{r.errors} | {batch} | {stages} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="embedding model ONNX (default: shipped, else a random export)")
    parser.add_argument("--clips", nargs="+", default=["002"], help="CASIA-B subjects (nm-01, 90°) or video paths")
    parser.add_argument("--background", type=Path, default=CASIA_VIDEOS / "001-bkgrd-090.avi",
                        help="empty-scene clip for background subtraction")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-concurrent-clips", type=int, default=4, help="GAITID_MAX_CONCURRENT_CLIPS")
    parser.add_argument("--batch-max", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--modes", nargs="+", choices=["off", "on"], default=["off", "on"],
                        help="cross-request batching off and/or on, in this order")
    args = parser.parse_args()

    clips = []
    for clip in args.clips:
        path = Path(clip) if Path(clip).suffix else CASIA_VIDEOS / f"{clip}-nm-01-090.avi"
        if not path.exists():
            sys.exit(f"missing clip {path} (the shared data folder beside the checkout)")
        clips.append((path.name, path.read_bytes()))
    if args.background and not args.background.exists():
        args.background = None
    OUT.mkdir(parents=True, exist_ok=True)
    model, model_note = embedding_model(args.model)
    print(f"model: {model_note}\nclips: {', '.join(n for n, _ in clips)}; levels {args.levels}; "
          f"{args.requests_per_client} requests per client; max concurrent clips {args.max_concurrent_clips}; "
          f"cpu cores: {os.cpu_count()}", flush=True)
    results: list[LevelResult] = []
    with tempfile.TemporaryDirectory(prefix="gaitid-load-", dir=OUT) as workdir:
        for mode in args.modes:
            results += run_mode(mode == "on", args, model, clips, Path(workdir))
    print()
    print(table(results))


if __name__ == "__main__":
    main()

"""`gaitid models fetch | import | list`: the person-segmentation and depth networks as ONNX files.

Two models, both exported to ONNX with dynamic batch/height/width and checked against torch:
- YOLO-seg: Ultralytics `yolov8n-seg.pt` -> YOLO_MODEL_FILE. Ultralytics runs only in its own
  environment (`.venv-ultra`: it needs its own CUDA torchvision build, which must never replace the
  torch of the main environment), so the export runs `model/export_yolo.py` with that environment's
  python, a subprocess. Which python: $GAITID_ULTRALYTICS_PYTHON, else `<repo>/.venv-ultra/bin/python`.
- Depth Anything V2 Small: the Hugging Face folder `depth-anything/Depth-Anything-V2-Small-hf`
  (config.json + model.safetensors) -> `depth-anything-v2-small.onnx`, exported in-process with
  transformers (model/export_depth.py).

`fetch_models` downloads the official weights (Ultralytics' own downloader, huggingface_hub) into
DEST/sources and installs them; `import_models` installs weights the user brings (offline).
`manifest.json` in DEST records, per ONNX file: sha256, size, source, and provenance (URL or local
path, weights sha256, library versions, export settings, parity against torch, date).
`list_models` prints what is installed and whether each file still matches its recorded sha256.
The ONNX file names are the clip pipeline's (service.pipeline.config), so the service finds what is
installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gaitid.contract import file_sha256
from service.pipeline.config import DEPTH_MODEL_FILE, YOLO_MODEL_FILE, PipelineSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPORT_YOLO_SCRIPT = Path(__file__).resolve().parent / "export_yolo.py"
ULTRALYTICS_PYTHON_ENV = "GAITID_ULTRALYTICS_PYTHON"

YOLO_OFFICIAL_WEIGHTS = "yolov8n-seg.pt"
DEPTH_HUB_ID = "depth-anything/Depth-Anything-V2-Small-hf"
DEPTH_FILES = ("config.json", "model.safetensors")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SOURCES_DIR = "sources"  # DEST/sources keeps fetched weights (re-export needs no second download)
YOLO_EXPORT_TIMEOUT_S = 1800

IMPORT_HINT = ("bring the files (yolov8n-seg.pt from https://github.com/ultralytics/assets/releases, and the "
               f"folder https://huggingface.co/{DEPTH_HUB_ID} with {' + '.join(DEPTH_FILES)}) "
               "and run `gaitid models import DIR`")


class ModelZooError(RuntimeError):
    """A model could not be installed; the message says what to do."""


class WeightsUnavailableError(ModelZooError):
    """No weights: offline and nothing to import, or a folder without the expected files."""


class UltralyticsEnvError(ModelZooError):
    """The separate Ultralytics environment that exports YOLO is missing."""


class ExportError(ModelZooError):
    """The export (or its parity check against torch) failed."""


@dataclass
class InstalledModel:
    file: str
    kind: str  # "segmenter" | "depth"
    path: Path
    status: str  # "ok" | "modified" (sha256 differs from the manifest) | "missing" | "unrecorded"
    sha256: str | None
    source: str
    provenance: dict = field(default_factory=dict)


def default_dest(dest: Path | None) -> Path:
    if dest is not None:
        return Path(dest)
    return PipelineSettings().models_dir


def ultralytics_python() -> Path:
    """The python of the Ultralytics environment, or a clear error saying how to create it."""
    configured = os.environ.get(ULTRALYTICS_PYTHON_ENV)
    python = Path(configured) if configured else REPO_ROOT / ".venv-ultra" / "bin" / "python"
    if not python.exists():
        raise UltralyticsEnvError(
            f"the YOLO export needs Ultralytics in its own environment, and {python} does not exist. "
            f"Create it with `make setup-dev` in {REPO_ROOT}, or by hand (it brings its own torch and "
            f"torchvision; never install ultralytics into the service's .venv):\n"
            f"  python3 -m venv {REPO_ROOT / '.venv-ultra'}\n"
            f"  {REPO_ROOT / '.venv-ultra' / 'bin' / 'pip'} install torch==2.13.0 torchvision==0.28.0\n"
            f"  {REPO_ROOT / '.venv-ultra' / 'bin' / 'pip'} install ultralytics onnx onnxslim onnxruntime\n"
            f"or point ${ULTRALYTICS_PYTHON_ENV} at a python that has ultralytics installed.")
    return python


# -- public entry points ------------------------------------------------------------------------------


def fetch_models(dest: Path | None = None, *, imgsz: int = 640) -> list[InstalledModel]:
    """Download the official YOLO-seg and Depth Anything V2 Small weights and export both to ONNX.

    Tries both; if either cannot be downloaded (offline), installs what it could and then raises
    `WeightsUnavailableError` naming `gaitid models import DIR`.
    """
    dest = default_dest(dest)
    sources = dest / SOURCES_DIR
    installed, failures = [], []
    try:
        installed.append(_install_yolo(YOLO_OFFICIAL_WEIGHTS, dest, imgsz=imgsz, method="fetch",
                                       download_dir=sources))
    except WeightsUnavailableError as exc:
        failures.append(f"YOLO-seg: {exc}")
    try:
        folder, revision = _download_depth(sources / DEPTH_HUB_ID.split("/")[-1])
        origin = f"https://huggingface.co/{DEPTH_HUB_ID}" + (f" (revision {revision})" if revision else "")
        installed.append(_install_depth(folder, dest, origin=origin, method="fetch"))
    except WeightsUnavailableError as exc:
        failures.append(f"Depth Anything: {exc}")
    _announce(installed)
    if failures:
        raise WeightsUnavailableError(
            "could not download: " + "; ".join(failures) + f".\nOffline? {IMPORT_HINT}.")
    return installed


def import_models(source: Path, dest: Path | None = None, *, imgsz: int = 640) -> list[InstalledModel]:
    """Offline: export the weights found in `source` to ONNX in `dest` and record them.

    `source` is a folder holding an Ultralytics `*.pt` checkpoint (yolov8n-seg.pt preferred when there
    are several) and/or a Hugging Face Depth Anything folder (config.json + model.safetensors; the
    folder itself or a subfolder), or directly one `.pt` file or one such folder.
    """
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise WeightsUnavailableError(f"{source} does not exist; {IMPORT_HINT}")
    dest = default_dest(dest)
    checkpoint = _find_yolo_checkpoint(source)
    depth_folder = _find_depth_folder(source)
    if checkpoint is None and depth_folder is None:
        raise WeightsUnavailableError(
            f"no model weights in {source}: expected an Ultralytics checkpoint ({YOLO_OFFICIAL_WEIGHTS}) "
            f"and/or a Depth Anything folder with {' + '.join(DEPTH_FILES)}. Online, `gaitid models fetch` "
            f"downloads both; offline, {IMPORT_HINT}")
    installed = []
    if checkpoint is not None:
        installed.append(_install_yolo(str(checkpoint), dest, imgsz=imgsz, method="import"))
    if depth_folder is not None:
        installed.append(_install_depth(depth_folder, dest, origin=str(depth_folder), method="import"))
    _announce(installed)
    return installed


def list_models(dest: Path | None = None, *, echo: bool = True) -> list[InstalledModel]:
    """What is installed in `dest` (manifest entries, plus ONNX files the manifest does not know)."""
    dest = default_dest(dest)
    manifest = read_manifest(dest)
    models = []
    for name, entry in sorted(manifest["models"].items()):
        path = dest / name
        if not path.exists():
            status = "missing"
        else:
            status = "ok" if file_sha256(path) == entry.get("sha256") else "modified"
        models.append(InstalledModel(name, entry.get("kind", "?"), path, status, entry.get("sha256"),
                                     entry.get("source", ""), entry.get("provenance", {})))
    if dest.is_dir():
        for path in sorted(dest.glob("*.onnx")):
            if path.name not in manifest["models"]:
                models.append(InstalledModel(path.name, "?", path, "unrecorded", None, "not in manifest.json"))
    if echo:
        _print_table(dest, models)
    return models


# -- manifest -----------------------------------------------------------------------------------------


def read_manifest(dest: Path) -> dict:
    path = Path(dest) / MANIFEST
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "models": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelZooError(f"{path} is not valid JSON ({exc}); delete it and re-run import/fetch") from exc
    manifest.setdefault("models", {})
    return manifest


def _record(dest: Path, file: str, kind: str, source: str, provenance: dict) -> InstalledModel:
    """Add/replace one entry in DEST/manifest.json (written atomically) and return it."""
    path = dest / file
    sha = file_sha256(path)
    manifest = read_manifest(dest)
    manifest["format"] = MANIFEST_FORMAT
    manifest["models"][file] = {"kind": kind, "sha256": sha, "bytes": path.stat().st_size,
                                "source": source, "provenance": provenance}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(dest / MANIFEST)
    return InstalledModel(file, kind, path, "ok", sha, source, provenance)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- YOLO-seg -----------------------------------------------------------------------------------------


def _find_yolo_checkpoint(source: Path) -> Path | None:
    if source.is_file():
        return source if source.suffix == ".pt" else None
    candidates = sorted(p for pattern in ("*.pt", "*/*.pt") for p in source.glob(pattern))
    if not candidates:
        return None
    preferred = [p for p in candidates if p.name == YOLO_OFFICIAL_WEIGHTS]
    if preferred:
        return preferred[0]
    if len(candidates) > 1:
        names = ", ".join(str(p.relative_to(source)) for p in candidates)
        raise WeightsUnavailableError(
            f"several checkpoints in {source} ({names}) and none is named {YOLO_OFFICIAL_WEIGHTS}: "
            f"pass the one to use, `gaitid models import path/to/file.pt`")
    return candidates[0]


def _install_yolo(weights: str, dest: Path, *, imgsz: int, method: str, download_dir: Path | None = None
                  ) -> InstalledModel:
    python = ultralytics_python()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / YOLO_MODEL_FILE
    _progress(f"exporting YOLO-seg {weights} -> {out} (Ultralytics in {python}) ...")
    with tempfile.TemporaryDirectory(prefix="gaitid-zoo-") as tmp:
        report_path = Path(tmp) / "report.json"
        command = [str(python), str(EXPORT_YOLO_SCRIPT), "--weights", weights, "--out", str(out),
                   "--imgsz", str(imgsz), "--report", str(report_path)]
        if download_dir is not None:
            download_dir.mkdir(parents=True, exist_ok=True)
            command += ["--download", "--download-dir", str(download_dir)]
        # Never let Ultralytics pip-install packages on its own; its settings stay in a throwaway dir.
        env = {**os.environ, "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(Path(tmp) / "ultralytics")}
        try:
            done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=tmp,
                                  timeout=YOLO_EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"YOLO export took longer than {YOLO_EXPORT_TIMEOUT_S} s and was stopped") from exc
        if done.returncode != 0:
            reason = _last_error_line(done.stderr) or _last_error_line(done.stdout) or f"exit {done.returncode}"
            if done.returncode == 3:
                raise WeightsUnavailableError(reason)
            raise ExportError(f"YOLO export with {python} failed: {reason}")
        report = json.loads(report_path.read_text())
    provenance = {
        "method": method,
        "origin": report["origin"],
        "weights_sha256": file_sha256(report["weights"]) if Path(report["weights"]).is_file() else None,
        "libraries": report["libraries"],
        "export": report["export"],
        "parity_relative_max_abs_diff": report["parity_relative_max_abs_diff"],
        "date": _now(),
    }
    return _record(dest, YOLO_MODEL_FILE, "segmenter", f"ultralytics {Path(weights).name}", provenance)


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


# -- Depth Anything -----------------------------------------------------------------------------------


def _find_depth_folder(source: Path) -> Path | None:
    """A folder with a Depth Anything config.json (the source, or a subfolder up to two levels down)."""
    if source.is_file():
        return None
    configs = [source / "config.json", *sorted(source.glob("*/config.json")), *sorted(source.glob("*/*/config.json"))]
    for config in configs:
        if not config.is_file():
            continue
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (json.JSONDecodeError, OSError):
            continue
        if model_type != "depth_anything":
            continue
        folder = config.parent
        if not (folder / "model.safetensors").is_file():
            raise WeightsUnavailableError(
                f"{folder} has a Depth Anything config.json but no model.safetensors; {IMPORT_HINT}")
        return folder
    return None


def _download_depth(into: Path) -> tuple[Path, str | None]:
    try:
        from huggingface_hub import HfApi, snapshot_download

        revision = HfApi().model_info(DEPTH_HUB_ID).sha
        folder = snapshot_download(DEPTH_HUB_ID, revision=revision, local_dir=str(into),
                                   allow_patterns=list(DEPTH_FILES))
    except Exception as exc:  # offline, DNS, HTTP, hub errors: all mean "not downloaded"
        raise WeightsUnavailableError(f"download of {DEPTH_HUB_ID} failed: {type(exc).__name__}: {exc}") from exc
    return Path(folder), revision


def _install_depth(folder: Path, dest: Path, *, origin: str, method: str) -> InstalledModel:
    from model.export_depth import export_depth_onnx, load_pretrained

    dest.mkdir(parents=True, exist_ok=True)
    _progress(f"exporting Depth Anything {folder} -> {dest / DEPTH_MODEL_FILE} ...")
    try:
        model = load_pretrained(folder)
    except Exception as exc:  # transformers raises OSError/ValueError/... for unusable folders
        raise ExportError(f"cannot load {folder} as a Depth Anything model: {exc}") from exc
    try:
        report = export_depth_onnx(model, dest / DEPTH_MODEL_FILE, source=origin)
    except RuntimeError as exc:
        raise ExportError(f"Depth Anything export failed: {exc}") from exc
    config = model.config
    provenance = {
        "method": method,
        "origin": origin,
        "weights_sha256": file_sha256(folder / "model.safetensors"),
        "libraries": report.libraries,
        "export": {"opset": report.opset, "dynamic_axes": report.dynamic_axes, "output": report.output,
                   "checked_shapes": report.checked_shapes,
                   "architecture": {"backbone_layers": config.backbone_config.num_hidden_layers,
                                    "backbone_width": config.backbone_config.hidden_size,
                                    "out_indices": list(config.backbone_config.out_indices),
                                    "neck_hidden_sizes": list(config.neck_hidden_sizes)}},
        "parity_max_abs_diff": report.parity_max_abs_diff,
        "parity_relative": report.parity_relative,
        "date": _now(),
    }
    return _record(dest, DEPTH_MODEL_FILE, "depth", f"transformers {folder.name}", provenance)


# -- printing -----------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _announce(installed: list[InstalledModel]) -> None:
    for m in installed:
        print(f"installed {m.path} ({m.kind}, sha256 {(m.sha256 or '')[:12]}) from {m.provenance.get('origin')}")


def _print_table(dest: Path, models: list[InstalledModel]) -> None:
    out = sys.stdout
    if not models:
        print(f"no models in {dest}; `gaitid models fetch` (online) or `gaitid models import DIR` (offline)",
              file=out)
        return
    print(f"models in {dest}:", file=out)
    header = f"{'file':32} {'kind':10} {'MB':>7} {'status':10} {'sha256':14} source / origin / date"
    print(header, file=out)
    for m in models:
        size = f"{m.path.stat().st_size / 1e6:7.1f}" if m.path.exists() else f"{'-':>7}"
        sha = (m.sha256 or "-")[:12]
        origin = m.provenance.get("origin", "")
        date = m.provenance.get("date", "")
        print(f"{m.file:32} {m.kind:10} {size} {m.status:10} {sha:14} {m.source}; {origin}; {date}", file=out)

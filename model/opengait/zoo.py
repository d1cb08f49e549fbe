"""`gaitid models fetch NAME`: the OpenGait zoo checkpoints of our architectures whose download address
OpenGait publishes, downloaded and converted; offline, what to download by hand and how to convert it.

Only entries with an address written in OpenGait's own documentation are listed (docs/1.model_zoo.md at
the commit in OPENGAIT_DOCS_COMMIT). OpenGait's README points at https://huggingface.co/opengait/OpenGait
for every other checkpoint; those can be downloaded there by hand and converted with
`gaitid models convert-opengait`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from model.opengait.architectures import Architecture

OPENGAIT_DOCS_COMMIT = "0efafd4779f127fbce34f22aff301bd82e923da5"
HUB_PAGE = "https://huggingface.co/opengait/OpenGait"
SOURCES_DIR = "sources"  # under the models folder, as model/zoo.py keeps fetched weights


class OpenGaitZooError(RuntimeError):
    """A zoo entry could not be installed; the message says what to do instead."""


@dataclass(frozen=True)
class OpenGaitZooEntry:
    name: str
    architecture: Architecture
    training_data: str
    checkpoint_url: str  # exactly as OpenGait's model zoo table links it
    accuracy: str  # the figures that table gives (we cannot re-measure them without the dataset)
    config: str  # the OpenGait config closest to it (the table names none for this row)

    @property
    def hub_file(self) -> tuple[str, str, str]:
        """(repo id, revision, path) of the checkpoint on the Hugging Face hub."""
        match = re.fullmatch(r"https://huggingface\.co/([^/]+/[^/]+)/(?:blob|resolve)/([^/]+)/(.+)", self.checkpoint_url)
        if match is None:
            raise OpenGaitZooError(f"{self.checkpoint_url} is not a Hugging Face file address")
        return match[1], match[2], match[3]

    def convert_command(self, checkpoint: str | Path = "CHECKPOINT.pt", out: str | Path | None = None) -> str:
        return (f"gaitid models convert-opengait {checkpoint} {out or self.name + '.onnx'} "
                f"--arch {self.architecture}")


ZOO: dict[str, OpenGaitZooEntry] = {
    entry.name: entry
    for entry in [
        OpenGaitZooEntry(
            name="deepgaitv2-p3d-sustech1k",
            architecture="deepgaitv2-p3d",
            training_data="SUSTech1K",
            checkpoint_url="https://huggingface.co/opengait/OpenGait/blob/main/SUSTech1K/DeepGaitV2/DeepGaitV2/"
                           "checkpoints/DeepGaitV2_30_DA-50000.pt",
            accuracy="SUSTech1K rank-1 ALL 82.4, rank-5 ALL 92.6 (OpenGait docs/1.model_zoo.md)",
            config="configs/deepgaitv2/DeepGaitV2_sustech1k.yaml",
        ),
    ]
}


def describe_zoo() -> str:
    lines = [f"{e.name}: {e.architecture} trained on {e.training_data}; {e.accuracy}" for e in ZOO.values()]
    lines.append(f"other OpenGait checkpoints: download from {HUB_PAGE} and run "
                 f"`gaitid models convert-opengait CHECKPOINT.pt OUT.onnx --arch ARCH [--config OPENGAIT_YAML]`")
    return "\n".join(lines)


def manual_steps(entry: OpenGaitZooEntry, dest: Path) -> str:
    checkpoint = Path(entry.hub_file[2]).name
    return (f"download {entry.checkpoint_url} by hand (the file behind that page), then run\n"
            f"  {entry.convert_command(checkpoint, dest / (entry.name + '.onnx'))}\n"
            f"(add --config with OpenGait's {entry.config} if you have it)")


def fetch_opengait(name: str, dest: Path) -> Path:
    """Download zoo entry `name` into DEST/sources and convert it to DEST/NAME.onnx; returns that path."""
    entry = ZOO.get(name)
    if entry is None:
        raise OpenGaitZooError(f"no OpenGait zoo entry named {name!r}. Known:\n{describe_zoo()}")
    repo_id, revision, filename = entry.hub_file
    try:
        from huggingface_hub import hf_hub_download

        checkpoint = Path(hf_hub_download(repo_id, filename, revision=revision, local_dir=dest / SOURCES_DIR / name))
    except Exception as exc:  # offline, hub refused, package missing: the manual route is the same
        raise OpenGaitZooError(f"could not download {name} ({type(exc).__name__}: {exc}).\n"
                               f"{manual_steps(entry, dest)}") from exc
    return convert_entry(entry, checkpoint, dest)


def convert_entry(entry: OpenGaitZooEntry, checkpoint: Path, dest: Path) -> Path:
    from model.opengait.convert import convert_opengait

    out = dest / f"{entry.name}.onnx"
    convert_opengait(checkpoint, out, entry.architecture, training_data=entry.training_data,
                     extra_provenance={"zoo_entry": entry.name, "source_url": entry.checkpoint_url,
                                       "zoo_accuracy": entry.accuracy})
    return out

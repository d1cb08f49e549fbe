"""Print the service's runtime requirements from pyproject.toml, one per line, leaving out the
named distributions and adding the named extras. The GPU image installs onnxruntime-gpu and
faiss-gpu-cu12 instead of the CPU builds that pyproject lists (both variants of each provide the
same Python module, so they must never be installed together); the images take extras from the
build argument EXTRAS (docker/compose.milvus.yml: `milvus`, for pymilvus):

    python3 docker/runtime_requirements.py --without onnxruntime faiss-cpu --extras milvus > requirements.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(pyproject: Path, without: set[str], extras: list[str] = ()) -> list[str]:
    """pyproject's [project] dependencies plus those of `extras`, minus `without`; every name in
    `without` and every extra must be there, so a renamed dependency cannot slip back into the GPU
    image, nor a misspelt extra leave its packages out, unnoticed."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise LookupError(f"no such extra in {pyproject}: {', '.join(unknown)}")
    dependencies = project["dependencies"] + [r for extra in extras for r in optional[extra]]
    drop = {normalized(n) for n in without}
    kept, seen = [], set()
    for requirement in dependencies:
        match = _NAME.match(requirement)
        if match is None:
            raise ValueError(f"unreadable requirement {requirement!r} in {pyproject}")
        name = normalized(match.group(1))
        seen.add(name)
        if name not in drop:
            kept.append(requirement)
    if drop - seen:
        raise LookupError(f"not in {pyproject}: {', '.join(sorted(drop - seen))}")
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--without", nargs="*", default=[], help="distribution names to leave out")
    parser.add_argument("--extras", nargs="*", default=[], help="extras to add (names, or comma-separated)")
    args = parser.parse_args(argv)
    extras = [name for item in args.extras for name in item.split(",") if name]
    try:
        kept = runtime_requirements(args.pyproject, set(args.without), extras)
    except LookupError as error:
        print(error, file=sys.stderr)
        return 1
    print("\n".join(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())

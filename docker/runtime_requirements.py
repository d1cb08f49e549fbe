"""Print the service's runtime requirements from pyproject.toml, one per line, leaving out the
named distributions. The GPU image installs onnxruntime-gpu and faiss-gpu-cu12 instead of the CPU
builds that pyproject lists (both variants of each provide the same Python module, so they must
never be installed together):

    python3 docker/runtime_requirements.py --without onnxruntime faiss-cpu > requirements.txt
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


def runtime_requirements(pyproject: Path, without: set[str]) -> list[str]:
    """pyproject's [project] dependencies minus `without`; every name in `without` must be there, so
    a renamed dependency cannot slip back into the GPU image unnoticed."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
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
    args = parser.parse_args(argv)
    try:
        kept = runtime_requirements(args.pyproject, set(args.without))
    except LookupError as error:
        print(error, file=sys.stderr)
        return 1
    print("\n".join(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())

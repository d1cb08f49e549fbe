"""Test helper: write an operator's keys file (service.auth's TOML format) from (name, gallery, role, secret)."""

from __future__ import annotations

from pathlib import Path

from gallery import hash_secret


def write_keys_file(path: Path, *keys: tuple[str, str, str, str]) -> Path:
    entries = [f'[[keys]]\nname = "{name}"\ngallery = "{gallery}"\nrole = "{role}"\nsha256 = "{hash_secret(secret)}"\n'
               for name, gallery, role, secret in keys]
    path.write_text("\n".join(entries), encoding="utf-8")
    return path


def key(secret: str) -> dict[str, str]:
    return {"X-API-Key": secret}

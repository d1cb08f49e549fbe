#!/usr/bin/env bash
# Test convenience for `make docker-test`: print the Python base image the builds should use.
# The public image (python:3.11-slim-bookworm) when the engine can pull it; otherwise an equivalent
# made here from Debian's own packages (machines without a container registry but with a Debian
# mirror): debootstrap bookworm + Debian's Python 3.11 and venv, imported as one layer.
#
#   GAITID_PYTHON_IMAGE=$(docker/base-image.sh)
#
# DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).
set -euo pipefail

PUBLIC=python:3.11-slim-bookworm
LOCAL=gaitid-local/python:3.11-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$PUBLIC" >/dev/null 2>&1 || timeout 120 docker pull -q "$PUBLIC" >/dev/null 2>&1; then
    echo "$PUBLIC"
    exit 0
fi
if docker image inspect "$LOCAL" >/dev/null 2>&1; then
    echo "$LOCAL"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "cannot pull $PUBLIC and no debootstrap to make $LOCAL" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/gaitid-rootfs.XXXXXX)
chmod 755 "$rootfs"  # it becomes the image's /: mktemp's 0700 would lock out the non-root user
trap 'rm -rf "$rootfs"' EXIT
echo "cannot pull $PUBLIC: making $LOCAL with debootstrap from $MIRROR" >&2
# python-is-python3: `python` on PATH as in the public image; python3-venv: venv + ensurepip.
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >&2
# What the slim image leaves out too: package caches and lists, documentation, man pages, locales.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap bookworm minbase + python3 (docker/base-image.sh)" - "$LOCAL" >/dev/null
echo "$LOCAL"

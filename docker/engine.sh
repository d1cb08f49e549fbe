#!/usr/bin/env bash
# Test convenience for `make docker-test`, not part of the product: make sure a Docker engine answers.
# If none does and this machine allows it (root, dockerd installed), start one the way these CI
# machines need: no bridge or iptables (containers and builds use the host's network), and the
# storage driver dockerd picks (overlay2 where the kernel mounts overlay, else vfs, which stores every
# layer as a full copy; GAITID_DOCKER_STORAGE_DRIVER=vfs forces it).
# The product never starts or changes a Docker engine on a user's machine.
#
#   docker/engine.sh start   prints "running" (an engine answered) or "started" (this script started one)
#   docker/engine.sh stop    stops the engine only if this script started it
#
# GAITID_DOCKER_ROOT (default /var/lib/gaitid-docker) holds the engine's images, build cache and
# volumes: delete it (engine stopped) to get the disk back.
set -euo pipefail

ROOT=${GAITID_DOCKER_ROOT:-/var/lib/gaitid-docker}
# Run-time state (sockets, network namespace mounts) apart from the data, so that deleting the data
# root never meets a mount point.
EXEC_ROOT=/run/gaitid-docker
PIDFILE=$EXEC_ROOT/dockerd.pid
LOG=$ROOT/dockerd.log

answers() { timeout 10 docker info >/dev/null 2>&1; }

start() {
    if answers; then echo running; return; fi
    if [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null; then
        echo "no Docker engine answers and none can be started here (needs root and dockerd:" \
             "apt-get install docker.io)" >&2
        return 1
    fi
    mkdir -p "$ROOT/data" "$EXEC_ROOT"
    # setsid: the engine outlives the make recipe's shell; stop() ends it by its pid file.
    setsid dockerd ${GAITID_DOCKER_STORAGE_DRIVER:+--storage-driver="$GAITID_DOCKER_STORAGE_DRIVER"} \
        --iptables=false --ip-masq=false --bridge=none \
        --data-root "$ROOT/data" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
        >"$LOG" 2>&1 </dev/null &
    for _ in $(seq 60); do
        if answers; then echo started; return; fi
        sleep 1
    done
    echo "dockerd did not answer within 60 s; its log: $LOG" >&2
    tail -20 "$LOG" >&2
    return 1
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        if ! kill -0 "$pid" 2>/dev/null; then
            # dockerd leaves its host network namespace mounted.
            umount "$EXEC_ROOT"/netns/* 2>/dev/null || true
            return 0
        fi
        sleep 1
    done
    echo "dockerd ($pid) still running after 30 s" >&2
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# kiln's local infrastructure, one idempotent command:
#
#   scripts/infra.sh up      install what is missing, write config, start the registry and the
#                            container engine API, build the local Python base image if needed
#   scripts/infra.sh down [registry|podman...]
#                            stop what `up` started (pid files), or only the services named;
#                            images and registry data stay. With KILN_INFRA_STARTED=FILE, `up`
#                            appends the name of each service it starts to FILE (so a caller
#                            can stop exactly those: scripts/test.sh does).
#   scripts/infra.sh install install the missing packages only (apt; part of `up`)
#   scripts/infra.sh apt PKG...
#                            apt-get install PKG... quietly (its output shown if it fails),
#                            with packages kept from starting their own services
#   scripts/infra.sh status  say what runs
#   scripts/infra.sh env     print the exports (eval "$(scripts/infra.sh env)")
#   scripts/infra.sh gc      reclaim registry space: stop the registry, run its garbage
#                            collection (blobs no manifest references), start it again
#
# Everything kiln owns lives under KILN_STATE_DIR (default /var/lib/kiln): containers.conf,
# registries.conf, the registry's config and storage, pid files, logs, podman's API socket.
# podman and buildah read the config through CONTAINERS_CONF / CONTAINERS_REGISTRIES_CONF,
# which `env` prints and kiln's Python code sets itself (kiln/infra/engine.py).
# On a machine with a working Docker daemon, Docker is the engine and podman is not started.
set -euo pipefail

STATE="${KILN_STATE_DIR:-/var/lib/kiln}"
REGISTRY_ADDR="${KILN_REGISTRY:-127.0.0.1:5000}"
BASE_IMAGE="${KILN_BASE_IMAGE:-python:3.11-slim}"
BASE_REF="docker.io/library/${BASE_IMAGE}"
[[ "$BASE_IMAGE" == */* ]] && BASE_REF="$BASE_IMAGE"
PODMAN_SOCK="$STATE/podman.sock"
SUITE="${KILN_DEBIAN_SUITE:-bookworm}"

log() { printf 'infra: %s\n' "$*" >&2; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

export CONTAINERS_CONF="$STATE/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$STATE/registries.conf"

# ---------------------------------------------------------------- install
need_pkgs() {
    local missing=() cmd pkg
    for pair in podman:podman runc:runc docker-registry:docker-registry \
        debootstrap:debootstrap skopeo:skopeo buildah:buildah curl:curl; do
        cmd="${pair%%:*}"
        pkg="${pair##*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    # runc before podman so apt does not pick crun (which cannot run containers here);
    # the rest is what podman's rootful networking and storage use.
    with_services_held apt_install runc "${missing[*]} ca-certificates netavark aardvark-dns \
        containernetworking-plugins catatonit iptables uidmap fuse-overlayfs slirp4netns" \
        || die "apt-get failed (status $?) installing ${missing[*]}; its output is above"
}

# Runs the command with a policy-rc.d in place, which keeps packages from starting their
# own services (docker-registry's on :5000, PostgreSQL's default cluster); one that is
# already there (every Debian container image ships one) is used as it is and kept.
with_services_held() {
    local policy="${INFRA_POLICY_RC_D:-/usr/sbin/policy-rc.d}" created=0 status=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    "$@" || status=$?
    if ((created)); then rm -f "$policy"; fi
    return "$status"
}

# apt-get update, then one install per argument (a space-separated group), in order.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt_quiet update -qq || return
    local group
    for group in "$@"; do
        # shellcheck disable=SC2086 # a group is a list of words
        apt_quiet install -y -qq --no-install-recommends $group || return
    done
}

# apt-get, quiet when it works; on failure its whole output goes to stderr (apt prints
# some errors, dpkg's among them, on stdout), so the reason shows.
apt_quiet() {
    local out status=0
    out="$(apt-get "$@" 2>&1)" || status=$?
    if ((status)); then
        printf '%s\n' "$out" >&2
        log "apt-get $1 failed with status $status"
    fi
    return "$status"
}

# ---------------------------------------------------------------- config
write_if_changed() {  # path, content on stdin
    local tmp
    tmp="$(mktemp "$1.XXXXXX")"
    cat >"$tmp"
    if cmp -s "$tmp" "$1" 2>/dev/null; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

write_config() {
    mkdir -p "$STATE/registry/data" "$STATE/run" "$STATE/logs"
    # crun cannot run containers here, runc can; no systemd, no journald.
    write_if_changed "$CONTAINERS_CONF" <<EOF
# written by kiln scripts/infra.sh
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    write_if_changed "$CONTAINERS_REGISTRIES_CONF" <<EOF
# written by kiln scripts/infra.sh
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"

[[registry]]
location = "$REGISTRY_ADDR"
insecure = true
EOF
    write_if_changed "$STATE/registry/config.yml" <<EOF
# written by kiln scripts/infra.sh; docker-registry (CNCF distribution) config
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

# ---------------------------------------------------------------- processes
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

note_started() { [[ -z "${KILN_INFRA_STARTED:-}" ]] || echo "$1" >>"$KILN_INFRA_STARTED"; }

registry_up() { curl -fsS -m 2 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; }

start_registry() {
    if registry_up; then
        pid_alive "$STATE/run/registry.pid" || log "a registry already answers on $REGISTRY_ADDR (not started by kiln)"
        return
    fi
    log "starting docker-registry on $REGISTRY_ADDR"
    setsid docker-registry serve "$STATE/registry/config.yml" \
        >>"$STATE/logs/registry.log" 2>&1 </dev/null &
    echo $! >"$STATE/run/registry.pid"
    note_started registry
    for _ in $(seq 50); do registry_up && return; sleep 0.1; done
    die "registry did not answer on $REGISTRY_ADDR; see $STATE/logs/registry.log"
}

docker_works() { DOCKER_HOST="$1" timeout 10 docker info >/dev/null 2>&1; }

# Which engine: a working Docker daemon wins; otherwise podman's API socket started here.
engine_host() {
    if [[ -n "${KILN_ENGINE:-}" && "$KILN_ENGINE" == podman ]]; then
        echo "unix://$PODMAN_SOCK"; return
    fi
    if command -v docker >/dev/null 2>&1; then
        if [[ -n "${DOCKER_HOST:-}" && "$DOCKER_HOST" != "unix://$PODMAN_SOCK" ]] \
            && docker_works "$DOCKER_HOST"; then
            echo "$DOCKER_HOST"; return
        fi
        if [[ -S /var/run/docker.sock ]] && docker_works unix:///var/run/docker.sock; then
            echo unix:///var/run/docker.sock; return
        fi
    fi
    echo "unix://$PODMAN_SOCK"
}

podman_api_up() {
    [[ -S "$PODMAN_SOCK" ]] && curl -fsS -m 2 --unix-socket "$PODMAN_SOCK" \
        http://d/_ping >/dev/null 2>&1
}

start_podman() {
    if podman_api_up; then return; fi
    log "starting podman API on unix://$PODMAN_SOCK"
    rm -f "$PODMAN_SOCK"
    setsid podman system service --time=0 "unix://$PODMAN_SOCK" \
        >>"$STATE/logs/podman.log" 2>&1 </dev/null &
    echo $! >"$STATE/run/podman.pid"
    note_started podman
    for _ in $(seq 100); do podman_api_up && return; sleep 0.1; done
    die "podman API did not answer on $PODMAN_SOCK; see $STATE/logs/podman.log"
}

# ---------------------------------------------------------------- base image
apt_mirror() {
    local uri=""
    if [[ -n "${KILN_DEBIAN_MIRROR:-}" ]]; then echo "$KILN_DEBIAN_MIRROR"; return; fi
    # deb822 sources first, then one-line sources; the first Debian archive that apt uses.
    uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | grep -m1 '/debian' || true)"
    if [[ -z "$uri" ]]; then
        uri="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            | grep -v -- '-security' | grep -m1 '/debian' || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

image_present() {  # engine-host ref
    if [[ "$1" == "unix://$PODMAN_SOCK" ]]; then
        podman image exists "$2"
    else
        DOCKER_HOST="$1" docker image inspect "$2" >/dev/null 2>&1
    fi
}

ensure_base_image() {
    local host="$1" rootfs mirror
    image_present "$host" "$BASE_REF" && return
    if [[ "${KILN_PULL_BASE:-1}" == 1 ]]; then
        log "pulling $BASE_REF (30 s at most)"
        if [[ "$host" == "unix://$PODMAN_SOCK" ]]; then
            timeout 30 podman pull -q "$BASE_REF" >/dev/null 2>&1 && return
        else
            DOCKER_HOST="$host" timeout 30 docker pull -q "$BASE_REF" >/dev/null 2>&1 && return
        fi
    fi
    mirror="$(apt_mirror)"
    log "building a stand-in for $BASE_IMAGE with debootstrap ($SUITE from $mirror; about a minute)"
    rootfs="$(mktemp -d "$STATE/rootfs.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$rootfs" "$mirror" >>"$STATE/logs/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $STATE/logs/debootstrap.log"
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
    ln -sf python3 "$rootfs/usr/bin/python"
    local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
    if [[ "$host" == "unix://$PODMAN_SOCK" ]]; then
        tar -C "$rootfs" --numeric-owner -c . | podman import -q "${changes[@]}" - "$BASE_REF" >/dev/null
    else
        tar -C "$rootfs" --numeric-owner -c . \
            | DOCKER_HOST="$host" docker import "${changes[@]}" - "$BASE_REF" >/dev/null
    fi
    rm -rf "$rootfs"
    trap - EXIT
    log "base image $BASE_REF ready"
}

print_env() {
    local host="${1:-$(engine_host)}"
    echo "export DOCKER_HOST=$host"
    echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
    echo "export CONTAINERS_REGISTRIES_CONF=$CONTAINERS_REGISTRIES_CONF"
    echo "export KILN_REGISTRY=$REGISTRY_ADDR"
    echo "export KILN_STATE_DIR=$STATE"
}

cmd_up() {
    [[ $EUID -eq 0 ]] || die "run as root (it installs packages and runs rootful podman)"
    need_pkgs
    write_config
    start_registry
    local host
    host="$(engine_host)"
    [[ "$host" == "unix://$PODMAN_SOCK" ]] && start_podman
    ensure_base_image "$host"
    print_env "$host"
}

stop_pid() {  # name pidfile
    if pid_alive "$2"; then
        local pid
        pid="$(cat "$2")"
        log "stopping $1 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$2"
}

cmd_down() {
    local services=("$@") name
    ((${#services[@]})) || services=(podman registry)
    for name in "${services[@]}"; do
        case "$name" in
            podman) stop_pid podman "$STATE/run/podman.pid"; rm -f "$PODMAN_SOCK" ;;
            registry) stop_pid registry "$STATE/run/registry.pid" ;;
            *) die "unknown service $name (registry, podman)" ;;
        esac
    done
}

cmd_status() {
    local rc=0 host
    if registry_up; then echo "registry: up on $REGISTRY_ADDR"; else echo "registry: down"; rc=1; fi
    host="$(engine_host)"
    if [[ "$host" == "unix://$PODMAN_SOCK" ]]; then
        if podman_api_up; then echo "engine: podman API up at $host"; else echo "engine: podman API down"; rc=1; fi
    else
        echo "engine: docker at $host"
    fi
    if image_present "$host" "$BASE_REF" 2>/dev/null; then echo "base image: $BASE_REF"; else echo "base image: missing"; rc=1; fi
    return $rc
}

cmd_gc() {
    local was_ours=0
    [[ -f "$STATE/registry/config.yml" ]] || die "no kiln registry config; run up first"
    if pid_alive "$STATE/run/registry.pid"; then was_ours=1; stop_pid registry "$STATE/run/registry.pid"; fi
    registry_up && die "a registry not started by kiln answers on $REGISTRY_ADDR; stop it first"
    local before after
    before="$(du -sm "$STATE/registry/data" | cut -f1)"
    # Not --delete-untagged: an image can be deployed by digest after its tag moved.
    docker-registry garbage-collect "$STATE/registry/config.yml" >>"$STATE/logs/gc.log" 2>&1 \
        || die "garbage-collect failed; see $STATE/logs/gc.log"
    after="$(du -sm "$STATE/registry/data" | cut -f1)"
    log "registry storage ${before} MB -> ${after} MB"
    ((was_ours)) && start_registry
    return 0
}

case "${1:-}" in
    up) cmd_up ;;
    install) need_pkgs ;;
    apt) shift; with_services_held apt_install "$*" ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    env) print_env ;;
    gc) cmd_gc ;;
    *) echo "usage: $0 up|install|apt PKG...|down|status|env|gc" >&2; exit 2 ;;
esac

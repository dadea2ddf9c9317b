# shellcheck shell=bash
# ensure_agent_image: make sure the agent image for the current recipe (images/) exists locally,
# building it when it does not. Source it; it defines functions only.
#
#   PYTHON=~/.agentfleet/venv/bin/python      # any python3 that can run `-m components.image`
#   source scripts/lib/agent-image.sh
#   ensure_agent_image || exit 1
#   echo "$AGENT_IMAGE"                        # agentfleet/agent:<12 hex>, also tagged :latest
#
# The tag is a hash of every file under images/ (components/image.py): an unchanged recipe is
# reused, a changed one is rebuilt (and Pulumi replaces the agents that ran the old image).
# Base image: debian:bookworm-slim when it is present or `docker pull` gets it; otherwise
# agentfleet/debian-base:bookworm, built once from Debian packages by images/build-base-rootfs
# (debootstrap + docker import) and reused afterwards.
# The Docker daemon must answer already (ensure_docker_engine). Full build output goes to
# ${AGENTFLEET_HOME:-~/.agentfleet}/agent-image-build.log.

_AGENTFLEET_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=log.sh
source "$_AGENTFLEET_LIB/log.sh"

AGENT_IMAGE_LATEST=agentfleet/agent:latest
AGENT_IMAGE_SLIM_BASE=debian:bookworm-slim
AGENT_IMAGE_LOCAL_BASE=agentfleet/debian-base:bookworm

ensure_agent_image() {
    local root=$_AGENTFLEET_LIB/../..
    local home=${AGENTFLEET_HOME:-$HOME/.agentfleet}
    local log=$home/agent-image-build.log
    local tag base start rc

    root=$(cd "$root" && pwd) || return 1
    if [[ -z ${PYTHON:-} ]]; then
        # shellcheck disable=SC2016  # literal $PYTHON
        printf 'error: ensure_agent_image needs $PYTHON (the venv python) to compute the image tag\n' >&2
        return 1
    fi
    if ! tag=$(cd "$root" && "$PYTHON" -m components.image); then
        printf 'error: could not compute the agent image tag (%s -m components.image in %s failed, see above)\n' \
            "$PYTHON" "$root" >&2
        return 1
    fi
    # shellcheck disable=SC2034  # for the caller
    AGENT_IMAGE=$tag

    if docker image inspect "$tag" >/dev/null 2>&1; then
        log_step "Agent image $tag is up to date"
        docker tag "$tag" "$AGENT_IMAGE_LATEST" || return 1
        return 0
    fi

    mkdir -p "$home" || return 1
    log_step "Building the agent image $tag"
    if docker image inspect "$AGENT_IMAGE_SLIM_BASE" >/dev/null 2>&1; then
        base=$AGENT_IMAGE_SLIM_BASE
        log_info "base: $base (present)"
    elif timeout 120 docker pull -q "$AGENT_IMAGE_SLIM_BASE" >/dev/null 2>&1; then
        base=$AGENT_IMAGE_SLIM_BASE
        log_info "base: $base (pulled)"
    else
        base=$AGENT_IMAGE_LOCAL_BASE
        if docker image inspect "$base" >/dev/null 2>&1; then
            log_info "base: $base (no registry; reusing the one built from Debian packages)"
        else
            log_info "base: no registry answers 'docker pull $AGENT_IMAGE_SLIM_BASE';" \
                "building $base from Debian packages (debootstrap, about a minute)"
            if ! log_timed "building $base" "$(setup_log debian-base)" "$root/images/build-base-rootfs" "$base"; then
                printf 'error: could not build the base image %s (see above); a Debian mirror must be reachable (AGENTFLEET_DEBIAN_MIRROR), then run scripts/setup again\n' \
                    "$base" >&2
                return 1
            fi
        fi
    fi

    log_info "docker build --build-arg BASE=$base -t $tag images/ (log: $log)"
    start=$SECONDS
    # Full output to the log; the build steps to stderr as progress (legacy builder
    # "Step n/m :", BuildKit "#n [i/m]"). Safe under the caller's set -e / pipefail.
    rm -f "$log.status"
    { docker build --force-rm --build-arg "BASE=$base" -t "$tag" "$root/images" 2>&1 || echo "$?" >"$log.status"; } |
        tee "$log" |
        grep --line-buffered -E '^(Step [0-9]+/[0-9]+ :|#[0-9]+ \[[^]]*[0-9]+/[0-9]+\])' |
        sed -u -E 's/^(.{0,100}).*/    \1/' >&2 || true
    rc=$(cat "$log.status" 2>/dev/null || echo 0)
    rm -f "$log.status"
    if [[ $rc -ne 0 ]] || ! docker image inspect "$tag" >/dev/null 2>&1; then
        printf 'error: docker build of the agent image failed (exit %s); last lines of %s:\n' "$rc" "$log" >&2
        tail -n 20 "$log" | sed -E 's/\x1b\[[0-9;]*m//g; s/^/    /' >&2
        return 1
    fi
    docker tag "$tag" "$AGENT_IMAGE_LATEST" || return 1
    log_info "built $tag in $((SECONDS - start)) s (also tagged $AGENT_IMAGE_LATEST)"
}

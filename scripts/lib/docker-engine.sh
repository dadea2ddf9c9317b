# shellcheck shell=bash
# ensure_docker_engine: make sure a Docker daemon answers `docker info`, installing Debian's
# docker.io and starting dockerd when this machine (root, no systemd) has none running.
# Source it; it defines functions only.
#
#   source scripts/lib/docker-engine.sh
#   ensure_docker_engine || exit 1
#
# Environment (all optional):
#   AGENTFLEET_HOME          state directory; dockerd logs to $AGENTFLEET_HOME/dockerd.log
#                            (default ~/.agentfleet)
#   AGENTFLEET_DOCKERD_ARGS  extra dockerd arguments, split on spaces (e.g. "--data-root /srv/docker")
#   DOCKER_HOST              honoured by `docker` as usual (pair it with -H in the arguments above)
#
# A dockerd started here runs in its own session, so it outlives the calling script.
# If dockerd dies on an iptables/nf_tables error, the iptables alternatives are switched to
# iptables-legacy (when installed) and dockerd is started once more.

_AGENTFLEET_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=log.sh
source "$_AGENTFLEET_LIB/log.sh"
# shellcheck source-path=SCRIPTDIR source=apt.sh
source "$_AGENTFLEET_LIB/apt.sh"
# shellcheck source-path=SCRIPTDIR source=output.sh
source "$_AGENTFLEET_LIB/output.sh"

_DOCKERD_READY_TIMEOUT=60

ensure_docker_engine() {
    local home=${AGENTFLEET_HOME:-$HOME/.agentfleet}
    local log=$home/dockerd.log
    local err

    if command -v docker >/dev/null 2>&1 && err=$(docker info 2>&1 >/dev/null); then
        return 0
    fi

    if [[ $(id -u) -ne 0 ]]; then
        if [[ $err == *"permission denied while trying to connect"* ]]; then
            printf 'error: the Docker daemon runs but %s may not use it: add yourself to the docker group (sudo usermod -aG docker %s, then log in again) or run this as root\n' \
                "$(id -un)" "$(id -un)" >&2
        else
            # shellcheck disable=SC2016  # backquotes are literal
            printf 'error: no Docker daemon answers `docker info` and only root can install or start one: run this script as root (sudo), or start Docker yourself and run it again\n' >&2
        fi
        return 1
    fi

    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        log_step "Installing Docker (Debian package docker.io)"
        if ! apt_install docker.io; then
            printf 'error: could not install docker.io with apt-get (see above); install Docker and run this again\n' >&2
            return 1
        fi
        # A systemd machine may have started it on installation.
        docker info >/dev/null 2>&1 && return 0
    fi

    mkdir -p "$home" || return 1

    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        log_step "Starting Docker (systemctl start docker)"
        systemctl start docker 2>&1 | tail -n 5 >&2
        _docker_wait_ready "" "systemctl status docker; journalctl -u docker" && return 0
        return 1
    fi

    if [[ -z ${DOCKER_HOST:-} ]] && _docker_running_dockerd; then
        log_step "Waiting for the running dockerd to answer"
        _docker_wait_ready "" "$log" && return 0
        return 1
    fi

    _docker_start_dockerd "$home" && return 0
    if _docker_log_says_iptables "$log" && _docker_switch_to_iptables_legacy; then
        _docker_start_dockerd "$home" && return 0
    fi
    printf 'error: dockerd did not come up; last lines of %s:\n' "$log" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
    if _docker_log_says_iptables "$log"; then
        printf '       dockerd fails on iptables: load the kernel modules (modprobe ip_tables iptable_nat nf_tables) or set AGENTFLEET_DOCKERD_ARGS="--iptables=false" (containers then lose outbound NAT)\n' >&2
    fi
    return 1
}

# Is some dockerd already running (started by someone else, maybe still starting)?
_docker_running_dockerd() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
    [[ -n $pid && -d /proc/$pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]
}

# Start dockerd in its own session, logging to $1/dockerd.log; wait until `docker info` answers.
_docker_start_dockerd() {
    local home=$1 log=$1/dockerd.log pidfile=$1/dockerd.pid
    local -a args
    read -r -a args <<<"${AGENTFLEET_DOCKERD_ARGS:-}"
    [[ -f $log ]] && mv -f "$log" "$log.1"
    rm -f "$pidfile"
    log_step "Starting dockerd ${args[*]} (log: $log)"
    # The inner shell records its own pid, then becomes dockerd (setsid may fork before it).
    # shellcheck disable=SC2016  # $$ and $1 belong to the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' agentfleet-dockerd "$pidfile" \
        dockerd "${args[@]}" >>"$log" 2>&1 </dev/null &
    _docker_wait_ready "$pidfile" "$log"
}

# Poll `docker info` every 0.2 s for up to $_DOCKERD_READY_TIMEOUT s; give up early when the
# dockerd whose pid is in $1 (if given) has exited. $2 names where to look on failure.
_docker_wait_ready() {
    local pidfile=$1 where=$2 start=$SECONDS pid
    while ((SECONDS - start < _DOCKERD_READY_TIMEOUT)); do
        docker info >/dev/null 2>&1 && { log_info "Docker daemon ready"; return 0; }
        if [[ -n $pidfile ]] && ((SECONDS - start >= 2)); then
            pid=$(cat "$pidfile" 2>/dev/null)
            if [[ -z $pid || ! -d /proc/$pid ]]; then
                log_info "dockerd exited (see $where)"
                return 1
            fi
        fi
        sleep 0.2
    done
    log_info "Docker daemon not answering after ${_DOCKERD_READY_TIMEOUT}s (see $where)"
    return 1
}

_docker_log_says_iptables() {
    output_matches 'iptables|ip6tables|nf_tables|nftables|xtables' tail -n 40 "$1"
}

# Point iptables/ip6tables at the legacy backend; fails if that is impossible or already so.
_docker_switch_to_iptables_legacy() {
    command -v update-alternatives >/dev/null 2>&1 || return 1
    [[ -x /usr/sbin/iptables-legacy ]] || return 1
    [[ $(readlink -f "$(command -v iptables)") == *legacy* ]] && return 1
    log_step "dockerd failed on iptables (nf_tables); switching iptables to iptables-legacy"
    update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null || return 1
    if [[ -x /usr/sbin/ip6tables-legacy ]]; then
        update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null || true
    fi
}

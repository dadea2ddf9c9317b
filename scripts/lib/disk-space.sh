# shellcheck shell=bash
# ensure_disk_space: stop before a build runs out of disk half-way. The toolchain build, the Go
# module cache and the agent image need about AGENTFLEET_MIN_FREE_GB (default 6) GiB free where
# they land (AGENTFLEET_HOME, the Go caches and Docker's data root share this check's target).

ensure_disk_space() {
    local want=${AGENTFLEET_MIN_FREE_GB:-6} dir=$AGENTFLEET_HOME free
    free=$(df --output=avail -BG "$dir" | tail -1 | tr -dc '0-9')
    if [ "${free:-0}" -lt "$want" ]; then
        die "only ${free}G free on the disk of $dir; setup needs ${want}G (free some space, or set AGENTFLEET_HOME to a larger disk)"
    fi
    log_info "disk: ${free}G free"
}

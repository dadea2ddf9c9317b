# shellcheck shell=bash
# Progress and failure messages shared by scripts/setup and its libraries.
# Source it; it defines functions only.
#
#   log_step "Building the agent image"   -> "==> Building the agent image" on stderr
#   log_info "reusing agentfleet/agent:…" -> "    reusing …" on stderr
#   log_timed "building limactl" LOG go build …
#                                         -> runs the command, its output to the file LOG ("-":
#                                            where it goes anyway); while it runs, a line every
#                                            $AGENTFLEET_PROGRESS_EVERY (30) s says what and for
#                                            how long; then "done in N s" (or "failed after N s")
#   die "what failed; what to do next"    -> "error: …" on stderr, exit 1

log_step() {
    printf '==> %s\n' "$*" >&2
}

log_info() {
    printf '    %s\n' "$*" >&2
}

# Long steps (Go builds, apt-get, pip, debootstrap) print nothing for minutes: the ticker says
# they are alive. It is a background loop that also stops when this shell has gone (die); its
# sleep holds none of our streams, so a reader of setup's output never waits for it.
log_timed() {
    local what=$1 log=$2 started rc=0 ticker parent=$$
    shift 2
    started=$(date +%s)
    (
        while sleep "${AGENTFLEET_PROGRESS_EVERY:-30}" </dev/null >/dev/null 2>&1 && kill -0 "$parent" 2>/dev/null; do
            log_info "… $what ($(( $(date +%s) - started )) s so far)"
        done
    ) &
    ticker=$!
    if [ "$log" = - ]; then
        "$@" || rc=$?
    else
        "$@" >"$log" 2>&1 || rc=$?
    fi
    kill "$ticker" 2>/dev/null
    wait "$ticker" 2>/dev/null || true
    if [ "$rc" -eq 0 ]; then
        log_info "$what: done in $(( $(date +%s) - started )) s"
    else
        log_info "$what: failed after $(( $(date +%s) - started )) s"
    fi
    return "$rc"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

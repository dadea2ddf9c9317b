# shellcheck shell=bash
# Progress and failure messages shared by scripts/setup and its libraries.
# Source it; it defines functions only.
#
#   log_step "Building the agent image"   -> "==> Building the agent image" on stderr
#   log_info "reusing agentfleet/agent:…" -> "    reusing …" on stderr
#   setup_log NAME                        -> prints $AGENTFLEET_HOME/logs/NAME.log (its directory made):
#                                            where a step's whole output goes, kept after setup ends
#   log_timed "building limactl" LOG go build …
#                                         -> runs the command, its output to the file LOG ("-":
#                                            where it goes anyway); while it runs, a line every
#                                            $AGENTFLEET_PROGRESS_EVERY (30) s says what and for
#                                            how long; then "done in N s", or "failed after N s"
#                                            with the last lines of LOG and where LOG is
#   go_step "compiling limactl" NAME go build …
#                                         -> log_timed into setup_log NAME; on failure dies saying
#                                            where the log is and that a second run resumes
#   die "what failed; what to do next"    -> "error: …" on stderr, exit 1

log_step() {
    printf '==> %s\n' "$*" >&2
}

log_info() {
    printf '    %s\n' "$*" >&2
}

setup_log() {
    local dir=${AGENTFLEET_HOME:-$HOME/.agentfleet}/logs
    mkdir -p "$dir" || die "cannot create $dir"
    printf '%s/%s.log\n' "$dir" "$1"
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
        return 0
    fi
    log_info "$what: failed after $(( $(date +%s) - started )) s"
    if [ "$log" != - ]; then
        tail -n 15 "$log" | sed 's/^/    | /' >&2
        log_info "full log: $log"
    fi
    return "$rc"
}

# Both of Go's caches outlive a failed run: the modules it downloaded (GOMODCACHE) and every
# package it compiled (GOCACHE). So a second run does only what the first did not finish, which
# is worth saying to someone who has just waited a quarter of an hour.
go_step() {
    local what=$1 log
    log=$(setup_log "$2")
    shift 2
    log_timed "$what" "$log" "$@" && return 0
    die "$what failed (log above; all of it in $log). Run scripts/setup again: Go keeps the modules it downloaded and the packages it compiled ($(go env GOMODCACHE), $(go env GOCACHE)), so a second run resumes where this one stopped; if it fails the same way, the log says why (a module it cannot fetch: is the Go module proxy $(go env GOPROXY) reachable?)"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

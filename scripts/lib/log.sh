# shellcheck shell=bash
# Progress and failure messages shared by scripts/setup and its libraries.
# Source it; it defines functions only.
#
#   log_step "Building the agent image"   -> "==> Building the agent image" on stderr
#   log_info "reusing agentfleet/agent:…" -> "    reusing …" on stderr
#   die "what failed; what to do next"    -> "error: …" on stderr, exit 1

log_step() {
    printf '==> %s\n' "$*" >&2
}

log_info() {
    printf '    %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

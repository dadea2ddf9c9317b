# shellcheck shell=bash
# ensure_multipass: Multipass ships only as a snap, which setup does not install. Say what to do
# when it is missing; `pulumi preview` then names the agents that need it.

ensure_multipass() {
    if command -v multipass >/dev/null 2>&1; then
        log_info "multipass present ($(command -v multipass))"
    else
        log_info "multipass is missing: install it with 'sudo snap install multipass' (setup installs no snaps); Multipass agents cannot start without it"
    fi
}

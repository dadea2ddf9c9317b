# shellcheck shell=bash
# ensure_host_tools: the Debian packages the operator's side uses: the OpenSSH client (ssh, and
# ssh-keyscan for readiness checks), git, curl, and sshd for the client's local tests.
# Installed with apt only when something is missing.

HOST_COMMANDS=(ssh ssh-keyscan git curl /usr/sbin/sshd)
HOST_PACKAGES=(openssh-client git curl openssh-server)

ensure_host_tools() {
    local missing=() cmd
    for cmd in "${HOST_COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && { log_info "host tools present"; return 0; }
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install ${HOST_PACKAGES[*]} (as root: apt-get install ${HOST_PACKAGES[*]})"
    log_step "Installing host tools (${missing[*]})"
    log_timed "apt-get install ${HOST_PACKAGES[*]}" - apt_install --no-install-recommends "${HOST_PACKAGES[@]}" \
        || die "apt-get could not install ${HOST_PACKAGES[*]}"
    # The package's own sshd is not wanted on the host: tests start their own.
    service ssh stop >/dev/null 2>&1 || true
}

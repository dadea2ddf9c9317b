# shellcheck shell=bash
# ensure_host_tools: the Debian packages the operator's side uses: the OpenSSH client (ssh, and
# ssh-keyscan for readiness checks), git, curl, and for the tests sshd (the client's local tests),
# cloud-init (its loader and schema checker read every rendered cloud-config:
# tests/unit/test_cloud_config_round_trip.py), and ip and nsenter (the tests' remote Docker hosts
# in network namespaces; see tests/e2e/remote_hosts.py), and nft (the egress ruleset's own check).
# Installed with apt only when missing.

HOST_COMMANDS=(ssh ssh-keyscan git curl /usr/sbin/sshd cloud-init /bin/ip /usr/bin/nsenter /usr/sbin/nft)
HOST_PACKAGES=(openssh-client git curl openssh-server cloud-init iproute2 util-linux nftables)

ensure_host_tools() {
    local missing=() cmd
    for cmd in "${HOST_COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && { log_info "host tools present"; return 0; }
    local had_cloud_init=0
    command -v cloud-init >/dev/null 2>&1 && had_cloud_init=1
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install ${HOST_PACKAGES[*]} (as root: apt-get install ${HOST_PACKAGES[*]})"
    log_step "Installing host tools (${missing[*]})"
    apt_install --no-install-recommends "${HOST_PACKAGES[@]}" \
        || die "apt-get could not install ${HOST_PACKAGES[*]}"
    # The package's own sshd is not wanted on the host: tests start their own.
    service ssh stop >/dev/null 2>&1 || true
    # Only cloud-init's Python is wanted, never its boot stages on this host (a cloud-init the
    # host already had is left as it was).
    [ "$had_cloud_init" -eq 1 ] || touch /etc/cloud/cloud-init.disabled
}

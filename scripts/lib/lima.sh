# shellcheck shell=bash
# ensure_lima: what Lima agents need on this machine, installed once and reused:
#   - qemu from Debian (qemu-system-x86, qemu-utils) and the image tools (debootstrap, fdisk);
#   - limactl $LIMA_VERSION built from Go modules, with its linux/amd64 guest agent where Lima
#     looks for it (<prefix>/share/lima/lima-guestagent.Linux-x86_64);
#   - the agent VM image, built from Debian packages by images/lima/build-vm-image and kept by
#     the hash of that recipe (components/backends/lima/backend.py computes the same hash);
#   - whether KVM works here (a one-off probe boot), recorded for the wrapper below;
#   - $LIMA_DIR/bin/limactl, the wrapper agentfleet (and you) run: it sets LIMA_HOME, forces
#     software emulation (TCG) when KVM does not work, and, when called by root, runs Lima as the
#     unprivileged user agentfleet-lima (limactl refuses to run as root).
# Source it; it defines functions only. Each part is skipped when present; a part is used only
# once complete (built in a .partial directory, then renamed).
#
# Where: $AGENTFLEET_LIMA_DIR, else $AGENTFLEET_HOME/lima, except for root: /var/lib/agentfleet/lima,
# because the unprivileged user that runs Lima for root cannot enter root's home.

_AGENTFLEET_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=log.sh
source "$_AGENTFLEET_LIB/log.sh"
# shellcheck source-path=SCRIPTDIR source=apt.sh
source "$_AGENTFLEET_LIB/apt.sh"
# shellcheck source-path=SCRIPTDIR source=output.sh
source "$_AGENTFLEET_LIB/output.sh"

LIMA_VERSION=1.2.1
LIMA_RUNNER=agentfleet-lima
LIMA_HOST_COMMANDS=(qemu-system-x86_64 qemu-img debootstrap sfdisk mkfs.ext4)
LIMA_HOST_PACKAGES=(qemu-system-x86 qemu-utils debootstrap fdisk e2fsprogs)
# The probe boot's budget: a working KVM boots the kernel to its panic in a second or two.
LIMA_KVM_PROBE_TIMEOUT=30

lima_dir() {
    if [ -n "${AGENTFLEET_LIMA_DIR:-}" ]; then
        echo "$AGENTFLEET_LIMA_DIR"
    elif [ "$(id -u)" -eq 0 ]; then
        echo /var/lib/agentfleet/lima
    else
        echo "${AGENTFLEET_HOME:-$HOME/.agentfleet}/lima"
    fi
}

# The image's cache key: the recipe's content hash (the same as components/backends/lima/backend.py).
lima_image_id() {
    sha256sum "$_AGENTFLEET_LIB/../../images/lima/build-vm-image" | cut -c1-16
}

ensure_lima() {
    local dir
    dir=$(lima_dir)
    mkdir -p "$dir/images" "$dir/bin" || die "cannot create $dir"
    chmod 0755 "$dir" "$dir/images" "$dir/bin"
    _lima_host_packages
    _lima_runner "$dir"
    _lima_limactl "$dir"
    _lima_image "$dir"
    _lima_accel "$dir"
    _lima_wrapper "$dir"
}

_lima_host_packages() {
    local missing=() cmd
    for cmd in "${LIMA_HOST_COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && { log_info "qemu and image tools present"; return 0; }
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; as root: apt-get install ${LIMA_HOST_PACKAGES[*]}"
    log_step "Installing qemu and image tools (${missing[*]})"
    apt_install --no-install-recommends "${LIMA_HOST_PACKAGES[@]}" \
        || die "apt-get could not install ${LIMA_HOST_PACKAGES[*]}"
}

# Root only: the unprivileged user that runs limactl and qemu, owning LIMA_HOME (instances).
_lima_runner() {
    local dir=$1
    if [ "$(id -u)" -ne 0 ]; then
        install -d -m 0700 "$dir/instances"
        return 0
    fi
    if ! id "$LIMA_RUNNER" >/dev/null 2>&1; then
        log_step "Creating the system user $LIMA_RUNNER (runs Lima for root; limactl refuses root)"
        useradd --system --user-group --home-dir "$dir/runner-home" --shell /usr/sbin/nologin "$LIMA_RUNNER" \
            || die "useradd $LIMA_RUNNER failed"
    fi
    # Where /dev/kvm belongs to a kvm group, its members may use it (the probe below decides).
    if getent group kvm >/dev/null && ! [[ " $(id -nG "$LIMA_RUNNER") " == *" kvm "* ]]; then
        usermod -aG kvm "$LIMA_RUNNER" || die "usermod -aG kvm $LIMA_RUNNER failed"
    fi
    install -d -o "$LIMA_RUNNER" -g "$LIMA_RUNNER" -m 0700 "$dir/runner-home" "$dir/instances"
}

_lima_limactl() {
    local dir=$1 target=$1/v$LIMA_VERSION work ldflags module
    if [ -f "$target/.complete" ] && [ -f "$target/share/lima/templates/default.yaml" ]; then
        log_info "limactl $LIMA_VERSION present ($target)"
        return 0
    fi
    command -v go >/dev/null || die "Go is needed to build limactl $LIMA_VERSION; install Go 1.23 or newer and run scripts/setup again"
    log_step "Building limactl $LIMA_VERSION and its guest agent from Go modules (a few minutes on a cold machine)"
    rm -rf "$target" "$target.partial"
    mkdir -p "$target.partial/bin" "$target.partial/share/lima"
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    # A wrapper module: `go install module@version` needs the proxy's version list, which some
    # proxies refuse; requiring the exact version works everywhere the module itself is served.
    printf 'module agentfleet.local/lima-toolchain\n\ngo 1.23.0\n\nrequire github.com/lima-vm/lima v%s\n' \
        "$LIMA_VERSION" >"$work/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/lima-vm/lima/cmd/limactl"\n\t_ "github.com/lima-vm/lima/cmd/lima-guestagent"\n)\n' \
        >"$work/tools.go"
    go_step "resolving Lima's Go modules (go mod tidy)" lima-mod-tidy go -C "$work" mod tidy
    ldflags="-s -w -X github.com/lima-vm/lima/pkg/version.Version=v$LIMA_VERSION"
    go_step "compiling limactl (go build)" limactl-build go -C "$work" build -trimpath -ldflags "$ldflags" \
        -o "$target.partial/bin/limactl" github.com/lima-vm/lima/cmd/limactl
    # Lima looks for <prefix>/share/lima/lima-guestagent.Linux-x86_64 next to <prefix>/bin/limactl.
    go_step "compiling lima-guestagent (go build)" lima-guestagent-build \
        env CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go -C "$work" build -trimpath -ldflags "$ldflags" \
        -o "$target.partial/share/lima/lima-guestagent.Linux-x86_64" github.com/lima-vm/lima/cmd/lima-guestagent
    chmod 0644 "$target.partial/share/lima/lima-guestagent.Linux-x86_64"
    # Lima's own templates, as `make install` places them: `limactl info`, and `limactl create
    # template://…` for users who can download Lima's images, read them there.
    module=$(cd "$work" && go list -m -f '{{.Dir}}' github.com/lima-vm/lima) \
        || die "the Lima module is missing from the module cache"
    cp -R "$module/templates" "$target.partial/share/lima/templates"
    chmod -R u+w,go+rX "$target.partial/share/lima/templates"
    "$target.partial/bin/limactl" --version >/dev/null 2>&1 || [ "$(id -u)" -eq 0 ] \
        || die "the built limactl does not run"
    touch "$target.partial/.complete"
    mv "$target.partial" "$target"
    log_info "built $target/bin/limactl"
}

_lima_image() {
    local dir=$1 id image
    id=$(lima_image_id)
    image=$dir/images/$id
    if [ -f "$image/.complete" ]; then
        log_info "Lima VM image present ($image)"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "building the Lima VM image needs root (debootstrap); run scripts/setup as root once, or give Lima agents an \`image\`"
    log_step "Building the Lima VM image $id from Debian packages (a few minutes)"
    rm -rf "$image" "$image.partial"
    log_timed "building the Lima VM image" "$(setup_log lima-vm-image)" \
        "$_AGENTFLEET_LIB/../../images/lima/build-vm-image" "$image.partial" \
        || die "building the Lima VM image failed (see above); a Debian mirror must be reachable (AGENTFLEET_DEBIAN_MIRROR), then run scripts/setup again"
    touch "$image.partial/.complete"
    mv "$image.partial" "$image"
    # Instances keep their own copy of the disk: images of older recipes serve nobody now.
    find "$dir/images" -mindepth 1 -maxdepth 1 -type d ! -name "$id" -exec rm -rf {} +
}

# Record "kvm" or "tcg" in $dir/accel. KVM counts as working when the image's kernel, booted
# under KVM by the user that runs qemu, reaches its panic (no root disk given) in time. Where
# /dev/kvm is missing or not usable by that user there is nothing to probe.
_lima_accel() {
    local dir=$1 image accel=tcg log
    if [ -f "$dir/accel" ]; then
        log_info "qemu accelerator: $(cat "$dir/accel") (recorded in $dir/accel; delete it to probe again)"
        return 0
    fi
    image=$dir/images/$(lima_image_id)
    log=$(mktemp)
    chmod 0644 "$log"
    # shellcheck disable=SC2016  # expanded by the inner shell
    if _lima_as_runner sh -c 'test -r /dev/kvm && test -w /dev/kvm' && _lima_as_runner \
        timeout "$LIMA_KVM_PROBE_TIMEOUT" qemu-system-x86_64 -accel kvm -machine q35 -cpu max -m 256 \
        -nodefaults -no-reboot -display none -serial "file:$log" \
        -kernel "$image/vmlinuz" -append "console=ttyS0 panic=-1" >/dev/null 2>&1 &&
        grep -q "Kernel panic" "$log"; then
        accel=kvm
    fi
    rm -f "$log"
    echo "$accel" >"$dir/accel"
    if [ "$accel" = kvm ]; then
        log_info "qemu accelerator: kvm (a probe guest booted)"
    else
        log_info "qemu accelerator: tcg (KVM is unavailable or its probe guest did not boot; VMs run emulated)"
    fi
}

_lima_as_runner() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid="$LIMA_RUNNER" --regid="$LIMA_RUNNER" --init-groups --reset-env "$@"
    else
        "$@"
    fi
}

_lima_wrapper() {
    local dir=$1 wrapper=$1/bin/limactl new
    new=$(mktemp)
    sed -e "s|@DIR@|$dir|g" -e "s|@VERSION@|$LIMA_VERSION|g" -e "s|@RUNNER@|$LIMA_RUNNER|g" >"$new" <<'WRAPPER'
#!/bin/sh
# limactl @VERSION@ for agentfleet, written by scripts/setup (scripts/lib/lima.sh).
# Instances live in LIMA_HOME=@DIR@/instances.
# Software emulation (TCG) unless AGENTFLEET_LIMA_ACCEL=kvm or the probe recorded in @DIR@/accel
# found KVM working: Lima always asks qemu for KVM on Linux and has no option against it, but it
# takes the qemu command from QEMU_SYSTEM_X86_64, whose -machine replaces its "q35,accel=kvm".
LIMA_HOME=@DIR@/instances
accel=${AGENTFLEET_LIMA_ACCEL:-$(cat @DIR@/accel 2>/dev/null || echo tcg)}
if [ "$accel" = tcg ] && [ -z "${QEMU_SYSTEM_X86_64:-}" ]; then
    QEMU_SYSTEM_X86_64="qemu-system-x86_64 -machine q35,vmport=off -accel tcg,thread=multi"
fi
export LIMA_HOME QEMU_SYSTEM_X86_64
if [ "$(id -u)" -eq 0 ]; then
    # limactl refuses to run as root: root runs it as @RUNNER@, from a directory that user may read.
    id @RUNNER@ >/dev/null 2>&1 || { echo "limactl: run scripts/setup as root first (it creates the user @RUNNER@)" >&2; exit 1; }
    cd / && exec setpriv --reuid=@RUNNER@ --regid=@RUNNER@ --init-groups --reset-env \
        env LIMA_HOME="$LIMA_HOME" QEMU_SYSTEM_X86_64="${QEMU_SYSTEM_X86_64:-}" @DIR@/v@VERSION@/bin/limactl "$@"
fi
exec @DIR@/v@VERSION@/bin/limactl "$@"
WRAPPER
    if ! cmp -s "$new" "$wrapper"; then
        install -m 0755 "$new" "$wrapper"
        log_info "wrote $wrapper"
    fi
    rm -f "$new"
    log_step "Lima $LIMA_VERSION ready: $wrapper (accelerator $(cat "$dir/accel"))"
}

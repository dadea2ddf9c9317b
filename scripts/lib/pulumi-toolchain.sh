# shellcheck shell=bash
# ensure_pulumi_toolchain: the Pulumi CLI, a Python language host and the dynamic-provider
# launcher in $AGENTFLEET_HOME/toolchain/<version>/bin, linked as toolchain/current.
#
# Where Pulumi's official installer is reachable it is used. Elsewhere (machines that reach only
# package registries) the CLI is built from Go modules at PULUMI_VERSION through a throwaway
# wrapper module (pkg/go.mod has replace lines, so `go install` refuses it). The upstream
# Python language host is a Go module the proxy does not serve, so agentfleet's own host
# (scripts/toolchain/pulumi_language_python.py) stands in; Pulumi's Python launcher scripts
# come from the SDK module at the same version. A directory is used only once complete.

PULUMI_VERSION=3.274.1

toolchain_id() {
    # The host script is part of the toolchain: a change to it must reinstall.
    echo "v$PULUMI_VERSION-$(sha256sum "$PROJECT_ROOT/scripts/toolchain/pulumi_language_python.py" | cut -c1-8)"
}

ensure_pulumi_toolchain() {
    local root="$AGENTFLEET_HOME/toolchain" id dir
    id=$(toolchain_id)
    dir="$root/$id"
    if [ -f "$dir/.complete" ]; then
        log_info "Pulumi $PULUMI_VERSION toolchain present ($dir)"
    else
        rm -rf "$dir" "$dir.partial"
        mkdir -p "$dir.partial/bin"
        # A failed install leaves nothing behind that a later run could take for complete.
        trap "rm -rf '$dir.partial'" EXIT
        # AGENTFLEET_PULUMI_FROM=go skips asking get.pulumi.com (machines that reach only registries).
        case ${AGENTFLEET_PULUMI_FROM:-auto} in
            go) build_pulumi_from_go_modules "$dir.partial" ;;
            installer) install_official_pulumi "$dir.partial" ;;
            auto)
                if curl -fsS --max-time 5 https://get.pulumi.com/ >/dev/null 2>&1; then
                    install_official_pulumi "$dir.partial"
                else
                    build_pulumi_from_go_modules "$dir.partial"
                fi ;;
            *) die "AGENTFLEET_PULUMI_FROM=${AGENTFLEET_PULUMI_FROM} is none of auto, go, installer" ;;
        esac
        touch "$dir.partial/.complete"
        mv "$dir.partial" "$dir"
        trap - EXIT
    fi
    ln -sfn "$id" "$root/current"
}

install_official_pulumi() {
    local target=$1
    log_step "Installing Pulumi $PULUMI_VERSION with the official installer"
    curl -fsSL https://get.pulumi.com | sh -s -- --version "$PULUMI_VERSION" --install-root "$target" --no-edit-path \
        || die "the official Pulumi installer failed; see its output above"
}

build_pulumi_from_go_modules() {
    local target=$1 work sdk
    command -v go >/dev/null || die "Go is needed to build the Pulumi CLI here (the official installer is unreachable); install Go 1.26 and run scripts/setup again"
    log_step "Building the Pulumi CLI $PULUMI_VERSION from Go modules (a few minutes on a cold machine)"
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    cat > "$work/go.mod" <<GOMOD
module agentfleet.local/pulumi-toolchain

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 v$PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 v$PULUMI_VERSION
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
GOMOD
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' > "$work/tools.go"
    go_step "resolving Pulumi's Go modules (go mod tidy)" pulumi-mod-tidy go -C "$work" mod tidy
    go_step "compiling the Pulumi CLI (go build)" pulumi-build go -C "$work" build -trimpath \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
        -o "$target/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    log_info "built $target/bin/pulumi"

    sdk=$(cd "$work" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3) \
        || die "the Pulumi SDK module is missing from the module cache"
    # Read-only in the module cache: install copies with the run bit.
    install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$target/bin/"
    install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$target/bin/"
    install -m 0644 "$PROJECT_ROOT/scripts/toolchain/pulumi_language_python.py" "$target/bin/"
    cat > "$target/bin/pulumi-language-python" <<HOST
#!/bin/sh
AGENTFLEET_PULUMI_VERSION=$PULUMI_VERSION exec "$AGENTFLEET_HOME/venv/bin/python" "\$(dirname "\$0")/pulumi_language_python.py" "\$@"
HOST
    chmod 0755 "$target/bin/pulumi-language-python"
}

# shellcheck shell=bash
# ensure_pulumi_yaml: Pulumi's YAML language host (pulumi-language-yaml), so projects with
# `runtime: yaml` (`agentfleet new DIR --yaml`) run here. Where the official installer works it
# ships with the CLI; elsewhere it is built from its Go module at PULUMI_YAML_VERSION (its go.mod
# has no replace lines, so `go install module@version` builds it as published) into
# $AGENTFLEET_HOME/pulumi-yaml/<version>, and a copy goes beside the toolchain's `pulumi`: the
# engine looks for its bundled language hosts there and warns about one found elsewhere on PATH.
# Source it; it defines functions only.

PULUMI_YAML_VERSION=1.25.0

ensure_pulumi_yaml() {
    local bin="$AGENTFLEET_HOME/toolchain/current/bin" dir="$AGENTFLEET_HOME/pulumi-yaml/v$PULUMI_YAML_VERSION"
    if [ -x "$bin/pulumi-language-yaml" ] && [ ! -f "$dir/pulumi-language-yaml" ]; then
        log_info "Pulumi YAML language host present (came with the Pulumi CLI)"
        return 0
    fi
    if [ ! -f "$dir/pulumi-language-yaml" ]; then
        command -v go >/dev/null || die "Go is needed to build Pulumi's YAML language host here; install Go 1.26 and run scripts/setup again"
        log_step "Building Pulumi's YAML language host $PULUMI_YAML_VERSION from its Go module"
        rm -rf "$dir.partial"
        mkdir -p "$dir.partial"
        go_step "compiling pulumi-language-yaml (go install)" pulumi-yaml-build \
            env GOBIN="$dir.partial" go install -trimpath -ldflags "-s -w" \
            "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml@v$PULUMI_YAML_VERSION"
        mv "$dir.partial" "$dir"  # only a complete build is ever at $dir
    fi
    if cmp -s "$dir/pulumi-language-yaml" "$bin/pulumi-language-yaml"; then
        log_info "Pulumi YAML language host $PULUMI_YAML_VERSION present"
    else
        install -m 0755 "$dir/pulumi-language-yaml" "$bin/pulumi-language-yaml"
        log_info "installed Pulumi's YAML language host $PULUMI_YAML_VERSION beside pulumi ($bin)"
    fi
}

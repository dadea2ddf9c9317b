# shellcheck shell=bash
# ensure_provider_plugin: agentfleet's own Pulumi provider plugin (pulumi-resource-agentfleet) at
# agentfleet's version, installed from this checkout the way Pulumi installs any plugin from a
# file, so the engine finds it by version (resource-agentfleet-v<version> in Pulumi's plugins).
# Source it; it defines functions only.

agentfleet_version() {
    sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$PROJECT_ROOT/agentfleet/__init__.py"
}

ensure_provider_plugin() {
    local version pulumi launcher installed
    version=$(agentfleet_version)
    [ -n "$version" ] || die "no __version__ in $PROJECT_ROOT/agentfleet/__init__.py"
    pulumi="$AGENTFLEET_HOME/toolchain/current/bin/pulumi"
    launcher=$(mktemp)
    # shellcheck disable=SC2064
    trap "rm -f '$launcher'" RETURN
    sed -e "s|@CLONE@|$PROJECT_ROOT|g" -e "s|@HOME@|$AGENTFLEET_HOME|g" \
        "$PROJECT_ROOT/scripts/plugin/pulumi-resource-agentfleet" >"$launcher"
    chmod 0755 "$launcher"
    installed="${PULUMI_HOME:-$HOME/.pulumi}/plugins/resource-agentfleet-v$version/pulumi-resource-agentfleet"
    if cmp -s "$launcher" "$installed"; then
        log_info "Pulumi plugin agentfleet $version installed"
        return 0
    fi
    "$pulumi" plugin install resource agentfleet "$version" --reinstall --file "$launcher" >/dev/null 2>&1 \
        || die "pulumi plugin install resource agentfleet $version --file $PROJECT_ROOT/scripts/plugin/pulumi-resource-agentfleet failed"
    log_info "installed the Pulumi plugin agentfleet $version (runs this clone's components/provider)"
}

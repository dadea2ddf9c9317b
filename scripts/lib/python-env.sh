# shellcheck shell=bash
# ensure_python_env: the shared virtual environment at $AGENTFLEET_HOME/venv with the pinned
# requirements. It holds no clone's code: each clone runs its own agentfleet through its
# scripts/bin/agentfleet launcher (the venv's Python with that clone first on sys.path), so two
# clones never run each other's code. Reinstalled only when requirements.txt changes (its hash
# is the stamp), so a warm run costs one comparison.

ensure_python_env() {
    local venv="$AGENTFLEET_HOME/venv" stamp want
    want=$(sha256sum "$PROJECT_ROOT/requirements.txt" | cut -c1-16)
    stamp="$venv/.agentfleet-stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log_info "Python environment up to date ($venv)"
        return 0
    fi
    log_step "Installing the Python environment ($venv)"
    command -v python3 >/dev/null || die "python3 is missing; install Python 3.11 or newer"
    rm -f "$stamp"
    python3 -m venv "$venv" || die "could not create a virtual environment; install python3-venv"
    log_timed "pip install -r requirements.txt" "$(setup_log pip)" \
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$PROJECT_ROOT/requirements.txt" \
        || die "pip could not install requirements.txt (is PyPI reachable?)"
    # Earlier setups installed one clone's agentfleet (editable) into the shared venv.
    "$venv/bin/pip" uninstall --quiet --yes agentfleet >/dev/null 2>&1 || true
    echo "$want" > "$stamp"
}

# shellcheck shell=bash
# ensure_python_env: the project's virtual environment at $AGENTFLEET_HOME/venv, with the pinned
# requirements and the agentfleet CLI. Reinstalled only when requirements.txt or pyproject.toml
# change or the clone moves (their hash is the stamp), so a warm run costs one comparison.

ensure_python_env() {
    local venv="$AGENTFLEET_HOME/venv" stamp want
    want=$( { cat "$PROJECT_ROOT/requirements.txt" "$PROJECT_ROOT/pyproject.toml"; echo "$PROJECT_ROOT"; } | sha256sum | cut -c1-16)
    stamp="$venv/.agentfleet-stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log_info "Python environment up to date ($venv)"
        return 0
    fi
    log_step "Installing the Python environment ($venv)"
    command -v python3 >/dev/null || die "python3 is missing; install Python 3.11 or newer"
    rm -f "$stamp"
    python3 -m venv "$venv" || die "could not create a virtual environment; install python3-venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$PROJECT_ROOT/requirements.txt" \
        || die "pip could not install requirements.txt (is PyPI reachable?)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -e "$PROJECT_ROOT" \
        || die "pip could not install the agentfleet package"
    echo "$want" > "$stamp"
}

# shellcheck shell=bash
# ensure_browser: Debian's chromium and chromium-driver, the headless browser the dashboard's test
# drives through selenium (tests/e2e/test_dashboard.py; selenium itself is in requirements.txt).
# Nothing is downloaded from elsewhere: the test names Debian's binaries, so selenium's own
# driver manager never runs. Installed with apt only when missing; part of a full setup (`all`,
# what `make test` needs). Source it with log.sh and apt.sh; it defines functions.

BROWSER_COMMANDS=(/usr/bin/chromium /usr/bin/chromedriver)
BROWSER_PACKAGES=(chromium chromium-driver)

ensure_browser() {
    local missing=() cmd
    for cmd in "${BROWSER_COMMANDS[@]}"; do
        [ -x "$cmd" ] || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && { log_info "headless browser present (chromium, chromedriver)"; return 0; }
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (as root: apt-get install ${BROWSER_PACKAGES[*]})"
    log_step "Installing the tests' headless browser (${BROWSER_PACKAGES[*]})"
    apt_install --no-install-recommends "${BROWSER_PACKAGES[@]}" \
        || die "apt-get could not install ${BROWSER_PACKAGES[*]}"
}

# shellcheck shell=bash
# apt_install [apt-get options] PACKAGE...: refresh the package lists, then install, as a timed
# step (root only; callers say what is missing first). Source it with log.sh; it defines functions.
#
# Calm output: apt-get's whole output goes to setup_log apt, shown (its last lines) only when it
# fails, so notes such as "debconf: delaying package configuration, since apt-utils is not
# installed" stay out of setup's output. The environment says what apt's hooks need to know: no
# questions (DEBIAN_FRONTEND), and no needrestart pass (NEEDRESTART_SUSPEND), whose Perl prints
# "readline() on closed filehandle" warnings when it runs without a terminal and has no services
# of ours to restart anyway.

apt_env() {
    env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l "$@"
}

apt_install() {
    log_timed "apt-get install $*" "$(setup_log apt)" _apt_update_and_install "$@" && return 0
    log_info "apt-get needs a reachable package mirror and the dpkg lock: fix what its log says, then run scripts/setup again"
    return 1
}

_apt_update_and_install() {
    apt_env apt-get update -qq && apt_env apt-get install -y -qq "$@"
}

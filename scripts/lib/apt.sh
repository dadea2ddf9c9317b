# shellcheck shell=bash
# apt_install [apt-get options] PACKAGE...: refresh the package lists, then install, quietly
# (root only; callers say what is missing first). Source it; it defines functions only.
#
# The environment says what apt's hooks need to know, so they stay quiet: no questions
# (DEBIAN_FRONTEND), and no needrestart pass (NEEDRESTART_SUSPEND), whose Perl prints
# "readline() on closed filehandle" warnings when it runs without a terminal and has
# no services of ours to restart anyway.

apt_env() {
    env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l "$@"
}

apt_install() {
    apt_env apt-get update -qq >/dev/null &&
        apt_env apt-get install -y -qq "$@" >/dev/null
}

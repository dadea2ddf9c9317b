# shellcheck shell=bash
# apt_install [apt-get options] PACKAGE...: refresh the package lists, then install, quietly
# (root only; callers say what is missing first). Source it; it defines functions only.

apt_install() {
    apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# shellcheck shell=bash
# Checks on what a command prints, safe under `set -o pipefail`. Source it; it defines functions only.
#
#   output_has TEXT COMMAND...    true when COMMAND succeeds and its output (stdout and stderr)
#                                 contains TEXT
#   output_matches ERE COMMAND... the same with an extended regular expression (case-insensitive)
#
# Why not `COMMAND | grep -q TEXT`: grep -q exits at its first match, and a COMMAND that is still
# writing (kubectl's second line, etcd's third) then dies of SIGPIPE, so under pipefail the check
# fails although the text is there, depending on timing. These read the whole output first.

output_has() {
    local text=$1 out
    shift
    out=$("$@" 2>&1) || return 1
    [[ $out == *"$text"* ]]
}

output_matches() {
    local pattern=$1 out
    shift
    out=$("$@" 2>&1) || return 1
    grep -qiE -- "$pattern" <<<"$out"
}

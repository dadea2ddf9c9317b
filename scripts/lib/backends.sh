# shellcheck shell=bash
# What each backend needs on this machine beyond the common part (host tools, Python, Pulumi),
# in the order setup installs them. A new backend is one line in BACKEND_STEPS (its functions in
# scripts/lib/<name>.sh, which setup sources with the others). Source it; it defines functions.
#
#   backend_steps lima docker   -> "ensure_docker_engine ensure_agent_image ensure_lima"

BACKEND_STEPS=(
    "docker: ensure_docker_engine ensure_agent_image"
    "lima: ensure_lima"
    "multipass: ensure_multipass"
    "kubernetes: ensure_kubernetes"
)

known_backends() {
    local entry names=()
    for entry in "${BACKEND_STEPS[@]}"; do names+=("${entry%%:*}"); done
    echo "${names[*]}"
}

# The steps of the given backends ("all": every one), each once, in BACKEND_STEPS order.
backend_steps() {
    local wanted=" $* " known entry steps=() entry_steps backend
    known=" $(known_backends) "
    [ "$wanted" = " all " ] && wanted=$known
    for backend in $wanted; do
        [[ $known == *" $backend "* ]] || die "unknown backend '$backend'; setup knows: $(known_backends)"
    done
    for entry in "${BACKEND_STEPS[@]}"; do
        [[ $wanted == *" ${entry%%:*} "* ]] && read -r -a entry_steps <<<"${entry#*:}" && steps+=("${entry_steps[@]}")
    done
    echo "${steps[*]}"
}

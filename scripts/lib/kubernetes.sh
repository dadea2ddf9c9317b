# shellcheck shell=bash
# ensure_kubernetes: what Kubernetes agents and their tests need on this machine, built once per
# version and reused, under $AGENTFLEET_HOME/kubernetes (outside the clone, like the toolchain):
#   - Debian's containerd, runc and CNI plugins (and nft, ip, openssl, a C compiler);
#   - k8s-v$KUBERNETES_VERSION/bin: kube-apiserver, kube-controller-manager, kube-scheduler,
#     kubelet, kube-proxy, kubectl, built from Go modules (static);
#   - etcd-v$ETCD_VERSION/bin/etcd, built from Go modules;
#   - pause-$PAUSE_VERSION/pause.tar: the pod sandbox image registry.k8s.io/pause:$PAUSE_VERSION
#     (no registry here), a few lines of C linked statically, as an image archive for
#     `ctr images import`;
#   - pulumi-kubernetes-v$PULUMI_KUBERNETES_VERSION/bin/pulumi-resource-kubernetes, the
#     pulumi-kubernetes provider built from Go modules, installed as a Pulumi plugin;
#   - current/: links to the parts of these versions (tests/kube_cluster.py reads it).
# Source it; it defines functions only. A part is used only once complete (built in a .partial
# directory, then renamed). Builds run under `nice` (KUBERNETES_NICE, default 15): they take
# minutes on a cold machine and share it.

_AGENTFLEET_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=log.sh
source "$_AGENTFLEET_LIB/log.sh"
# shellcheck source-path=SCRIPTDIR source=output.sh
source "$_AGENTFLEET_LIB/output.sh"
# shellcheck source-path=SCRIPTDIR source=apt.sh
source "$_AGENTFLEET_LIB/apt.sh"

# 1.34 is the last release whose kubelet runs on cgroup v1 without being told to.
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.6.4 # the one Kubernetes $KUBERNETES_VERSION pins
PAUSE_VERSION=3.10 # the sandbox image kubelet $KUBERNETES_VERSION asks for
PULUMI_KUBERNETES_VERSION=4.25.0
# The proxy serves no tagged provider module (the release commit deletes provider/go.mod); this
# pseudo-version is the release commit's parent, the $PULUMI_KUBERNETES_VERSION provider source.
PULUMI_KUBERNETES_PROVIDER_MODULE=v4.0.0-20260115033456-f47bc2d6f199
KUBERNETES_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# Staging modules the proxy does not serve; no command needs them.
KUBERNETES_UNSERVED=(k8s.io/sample-cli-plugin k8s.io/sample-controller)
KUBERNETES_HOST_COMMANDS=(containerd ctr runc /usr/lib/cni/bridge nft ip openssl gcc unshare)
KUBERNETES_HOST_PACKAGES=(containerd runc containernetworking-plugins nftables iproute2 openssl gcc libc6-dev util-linux)

kubernetes_dir() {
    echo "${AGENTFLEET_HOME:-$HOME/.agentfleet}/kubernetes"
}

ensure_kubernetes() {
    local dir started
    dir=$(kubernetes_dir)
    mkdir -p "$dir" || die "cannot create $dir"
    started=$(date +%s)
    _kube_host_packages
    _kube_binaries "$dir"
    _kube_etcd "$dir"
    _kube_pause "$dir"
    _kube_pulumi_provider "$dir"
    _kube_current "$dir"
    log_step "Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, pulumi-kubernetes $PULUMI_KUBERNETES_VERSION ready in $(( $(date +%s) - started ))s ($dir/current)"
}

_kube_host_packages() {
    local missing=() cmd
    for cmd in "${KUBERNETES_HOST_COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && { log_info "containerd, runc, CNI plugins present"; return 0; }
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; as root: apt-get install ${KUBERNETES_HOST_PACKAGES[*]}"
    log_step "Installing containerd, runc, CNI plugins (${missing[*]})"
    apt_install --no-install-recommends "${KUBERNETES_HOST_PACKAGES[@]}" \
        || die "apt-get could not install ${KUBERNETES_HOST_PACKAGES[*]}"
    # The package starts the system's containerd; the cluster runs its own (tests/kube_cluster.py).
}

# Whether the kubectl (etcd) at $1 reports the version built. Both print more lines after the
# version (kubectl Kustomize's, etcd its Git SHA and Go version): output_has reads them all.
kube_kubectl_reports_version() {
    output_has "v$KUBERNETES_VERSION" "$1" version --client
}

kube_etcd_reports_version() {
    output_has "etcd Version: $ETCD_VERSION" "$1" --version
}

# A throwaway Go module in a new directory (printed): $1 is its go.mod body after the header.
_kube_wrapper_module() {
    local work
    work=$(mktemp -d)
    printf 'module agentfleet.local/%s\n\ngo 1.24.0\n\n%s\n' "$1" "$2" >"$work/go.mod"
    echo "$work"
}

_kube_go() {
    nice -n "${KUBERNETES_NICE:-15}" env CGO_ENABLED=0 go "$@"
}

_kube_binaries() {
    local dir=$1 target=$1/k8s-v$KUBERNETES_VERSION work gomod replaces="" module ldflags pkg packages=() v started
    if [ -f "$target/.complete" ]; then
        log_info "Kubernetes $KUBERNETES_VERSION binaries present ($target)"
        return 0
    fi
    command -v go >/dev/null || die "Go is needed to build Kubernetes $KUBERNETES_VERSION; install Go 1.24 or newer and run scripts/setup again"
    log_step "Building Kubernetes $KUBERNETES_VERSION (${KUBERNETES_COMMANDS[*]}) from Go modules (about 7 minutes of 2 cores when cold)"
    started=$(date +%s)
    rm -rf "$target" "$target.partial"
    mkdir -p "$target.partial/bin"
    # k8s.io/kubernetes replaces its staging modules (k8s.io/api, …) with local paths, which a
    # dependency ignores: the wrapper points each at the published module of the same release.
    gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p') \
        && [ -f "$gomod" ] || die "k8s.io/kubernetes v$KUBERNETES_VERSION is not available from the Go module proxy"
    for module in $(sed -n 's|^\t\(k8s.io/[a-z-]*\) => ./staging/.*|\1|p' "$gomod"); do
        [[ " ${KUBERNETES_UNSERVED[*]} " == *" $module "* ]] && continue
        replaces+="replace $module => $module v0.${KUBERNETES_VERSION#1.}"$'\n'
    done
    [ -n "$replaces" ] || die "found no staging modules in $gomod"
    work=$(_kube_wrapper_module kubernetes-build "require k8s.io/kubernetes v$KUBERNETES_VERSION
$replaces")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    for pkg in "${KUBERNETES_COMMANDS[@]}"; do
        packages+=("k8s.io/kubernetes/cmd/$pkg")
    done
    { printf '//go:build tools\n\npackage tools\n\nimport (\n'; printf '\t_ "%s"\n' "${packages[@]}"; printf ')\n'; } >"$work/tools.go"
    go_step "resolving Kubernetes' Go modules (go mod tidy)" kubernetes-mod-tidy go -C "$work" mod tidy
    ldflags="-s -w"
    for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $v.gitVersion=v$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION") -X $v.gitTreeState=clean"
    done
    go_step "compiling Kubernetes (go build)" kubernetes-build \
        _kube_go -C "$work" build -trimpath -ldflags "$ldflags" -o "$target.partial/bin/" "${packages[@]}"
    kube_kubectl_reports_version "$target.partial/bin/kubectl" \
        || die "the built kubectl does not report v$KUBERNETES_VERSION"
    touch "$target.partial/.complete"
    mv "$target.partial" "$target"
    log_info "built $target/bin in $(( $(date +%s) - started ))s"
}

_kube_etcd() {
    local dir=$1 target=$1/etcd-v$ETCD_VERSION work started
    if [ -f "$target/.complete" ]; then
        log_info "etcd $ETCD_VERSION present ($target)"
        return 0
    fi
    log_step "Building etcd $ETCD_VERSION from Go modules"
    started=$(date +%s)
    rm -rf "$target" "$target.partial"
    mkdir -p "$target.partial/bin"
    work=$(_kube_wrapper_module etcd-build "require go.etcd.io/etcd/server/v3 v$ETCD_VERSION")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' \
        >"$work/main.go"
    go_step "resolving etcd's Go modules (go mod tidy)" etcd-mod-tidy go -C "$work" mod tidy
    go_step "compiling etcd (go build)" etcd-build _kube_go -C "$work" build -trimpath -ldflags "-s -w" \
        -o "$target.partial/bin/etcd" .
    kube_etcd_reports_version "$target.partial/bin/etcd" \
        || die "the built etcd does not report version $ETCD_VERSION"
    touch "$target.partial/.complete"
    mv "$target.partial" "$target"
    log_info "built $target/bin/etcd in $(( $(date +%s) - started ))s"
}

# The sandbox ("pause") image: PID 1 of every pod, holding its namespaces. It exits on INT and
# TERM and reaps orphans. Packed as a Docker image archive, as `ctr images import` takes it.
_kube_pause() {
    local dir=$1 target=$1/pause-$PAUSE_VERSION work layer config
    if [ -f "$target/.complete" ]; then
        log_info "pause image $PAUSE_VERSION present ($target)"
        return 0
    fi
    log_step "Building the pod sandbox image registry.k8s.io/pause:$PAUSE_VERSION"
    rm -rf "$target" "$target.partial"
    mkdir -p "$target.partial"
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    mkdir -p "$work/rootfs" "$work/image"
    cat >"$work/pause.c" <<'C'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
C
    gcc -static -Os -s -o "$work/rootfs/pause" "$work/pause.c" 2>"$work/gcc.log" \
        || die "compiling the pause binary failed: $(tail -3 "$work/gcc.log")"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" pause
    layer=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    mkdir "$work/image/$layer"
    mv "$work/layer.tar" "$work/image/$layer/layer.tar"
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$layer" >"$work/config.json"
    config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
    mv "$work/config.json" "$work/image/$config.json"
    printf '[{"Config":"%s.json","RepoTags":["registry.k8s.io/pause:%s"],"Layers":["%s/layer.tar"]}]' \
        "$config" "$PAUSE_VERSION" "$layer" >"$work/image/manifest.json"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/image" -cf "$target.partial/pause.tar" .
    touch "$target.partial/.complete"
    mv "$target.partial" "$target"
    log_info "built $target/pause.tar"
}

# The provider's main embeds its schema and Terraform mapping, which upstream's generate.go
# writes next to it (the module zip lacks them): that step runs here, from the module cache,
# and a main of ours serves the provider with them, as upstream's does.
_kube_pulumi_provider() {
    local dir=$1 target=$1/pulumi-kubernetes-v$PULUMI_KUBERNETES_VERSION work cmd started pulumi
    pulumi=${AGENTFLEET_HOME:-$HOME/.agentfleet}/toolchain/current/bin/pulumi
    if [ ! -f "$target/.complete" ]; then
        log_step "Building the pulumi-kubernetes provider $PULUMI_KUBERNETES_VERSION from Go modules (about 10 minutes of 2 cores when cold)"
        started=$(date +%s)
        rm -rf "$target" "$target.partial"
        mkdir -p "$target.partial/bin"
        work=$(_kube_wrapper_module pulumi-kubernetes-build "require (
	github.com/pulumi/pulumi-kubernetes/provider/v4 $PULUMI_KUBERNETES_PROVIDER_MODULE
	github.com/pulumi/pulumi-kubernetes/sdk/v4 v$PULUMI_KUBERNETES_VERSION
)")
        # shellcheck disable=SC2064
        trap "rm -rf '$work'" RETURN
        printf '//go:build tools\n\npackage main\n\nimport (\n\t_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"\n\t_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"\n)\n' \
            >"$work/tools.go"
        go_step "resolving pulumi-kubernetes' Go modules (go mod tidy)" pulumi-kubernetes-mod-tidy go -C "$work" mod tidy
        cmd=$(cd "$work" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi-kubernetes/provider/v4)/cmd/pulumi-resource-kubernetes
        mkdir "$work/gen"
        cp "$cmd/generate.go" "$work/gen/"
        cp "$cmd/schema.json" "$cmd/terraform-mapping.json" "$work/"
        chmod u+w "$work"/*.json
        VERSION=$PULUMI_KUBERNETES_VERSION go_step "generating the provider schema (go run)" pulumi-kubernetes-generate \
            _kube_go -C "$work" run ./gen/generate.go
        cat >"$work/main.go" <<'GO'
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var schema []byte

//go:embed terraform-mapping-embed.json
var mapping []byte

func main() { provider.Serve("kubernetes", version.Version, schema, mapping) }
GO
        go_step "compiling the pulumi-kubernetes provider (go build)" pulumi-kubernetes-build _kube_go -C "$work" build \
            -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION" \
            -o "$target.partial/bin/pulumi-resource-kubernetes" .
        touch "$target.partial/.complete"
        mv "$target.partial" "$target"
        log_info "built $target/bin/pulumi-resource-kubernetes in $(( $(date +%s) - started ))s"
    else
        log_info "pulumi-kubernetes provider $PULUMI_KUBERNETES_VERSION present ($target)"
    fi
    [ -x "$pulumi" ] || die "the Pulumi CLI is missing ($pulumi): ensure_pulumi_toolchain installs it"
    if cmp -s "$target/bin/pulumi-resource-kubernetes" \
        "${PULUMI_HOME:-$HOME/.pulumi}/plugins/resource-kubernetes-v$PULUMI_KUBERNETES_VERSION/pulumi-resource-kubernetes"; then
        log_info "Pulumi plugin kubernetes $PULUMI_KUBERNETES_VERSION installed"
        return 0
    fi
    "$pulumi" plugin install resource kubernetes "$PULUMI_KUBERNETES_VERSION" --reinstall \
        --file "$target/bin/pulumi-resource-kubernetes" >/dev/null 2>&1 \
        || die "pulumi plugin install resource kubernetes $PULUMI_KUBERNETES_VERSION --file $target/bin/pulumi-resource-kubernetes failed"
    log_info "installed the Pulumi plugin kubernetes $PULUMI_KUBERNETES_VERSION"
}

# current/: one place for what the cluster runs, whatever the versions (replaced as a whole).
_kube_current() {
    local dir=$1 next=$1/current.next name
    rm -rf "$next"
    mkdir -p "$next/bin"
    for name in "${KUBERNETES_COMMANDS[@]}"; do
        ln -s "../../k8s-v$KUBERNETES_VERSION/bin/$name" "$next/bin/$name"
    done
    ln -s "../../etcd-v$ETCD_VERSION/bin/etcd" "$next/bin/etcd"
    ln -s "../pause-$PAUSE_VERSION/pause.tar" "$next/pause.tar"
    printf 'kubernetes=%s\netcd=%s\npause=%s\npulumi-kubernetes=%s\n' \
        "$KUBERNETES_VERSION" "$ETCD_VERSION" "$PAUSE_VERSION" "$PULUMI_KUBERNETES_VERSION" >"$next/versions"
    rm -rf "$dir/current"
    mv "$next" "$dir/current"
}

# shellcheck shell=bash
# ensure_gitea: the Gitea forge the forge tests run on loopback (tests/e2e/gitea_server.py), built
# once per version from Go modules under $AGENTFLEET_HOME/gitea/gitea-v$GITEA_VERSION:
#   bin/gitea                      built with SQLite (cgo), so a test forge needs no database server;
#   share/{options,templates,public}  what a build without the bindata tag reads at run time
#                                  (the server's STATIC_ROOT_PATH points here);
#   current -> gitea-v$GITEA_VERSION.
# code.gitea.io/gitea's go.mod has replace lines, which `go install` refuses and a dependency's
# go.mod does not pass on: a throwaway wrapper module takes them over from the published go.mod.
# Source it; it defines functions only. The build runs under `nice` (GITEA_NICE, default 15): it
# took 247 s of 2 cores here, with Go's build cache warm from the Pulumi and Kubernetes builds.

GITEA_VERSION=1.26.0
GITEA_TAGS="sqlite sqlite_unlock_notify"

gitea_dir() {
    echo "${AGENTFLEET_HOME:-$HOME/.agentfleet}/gitea"
}

ensure_gitea() {
    local dir target work gomod source started
    dir=$(gitea_dir)
    target=$dir/gitea-v$GITEA_VERSION
    if [ -f "$target/.complete" ]; then
        log_info "Gitea $GITEA_VERSION present ($target)"
        ln -sfn "gitea-v$GITEA_VERSION" "$dir/current"
        return 0
    fi
    command -v go >/dev/null || die "Go is needed to build Gitea $GITEA_VERSION for the forge tests; install Go 1.26 and run scripts/setup again"
    command -v gcc >/dev/null || die "a C compiler is needed to build Gitea with SQLite (cgo); apt-get install gcc libc6-dev and run scripts/setup again"
    log_step "Building Gitea $GITEA_VERSION from Go modules (minutes: about 4 of 2 cores with a warm Go build cache)"
    started=$(date +%s)
    rm -rf "$target" "$target.partial"
    mkdir -p "$target.partial/bin" "$target.partial/share"
    gomod=$(go mod download -json "code.gitea.io/gitea@v$GITEA_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p') \
        && [ -f "$gomod" ] || die "code.gitea.io/gitea v$GITEA_VERSION is not available from the Go module proxy $(go env GOPROXY)"
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    {
        printf 'module agentfleet.local/gitea-build\n\ngo 1.26\n\nrequire code.gitea.io/gitea v%s\n\n' "$GITEA_VERSION"
        grep '^replace ' "$gomod"
    } >"$work/go.mod"
    # `go mod tidy` keeps a requirement only if some file imports it; a main package can be named
    # only from a file the build never compiles.
    printf '//go:build tools\n\npackage tools\n\nimport _ "code.gitea.io/gitea"\n' >"$work/tools.go"
    go_step "resolving Gitea's Go modules (go mod tidy)" gitea-mod-tidy go -C "$work" mod tidy
    go_step "compiling Gitea (go build -tags '$GITEA_TAGS')" gitea-build \
        nice -n "${GITEA_NICE:-15}" env CGO_ENABLED=1 go -C "$work" build -trimpath -tags "$GITEA_TAGS" \
        -ldflags "-s -w -X 'main.Version=$GITEA_VERSION' -X 'main.Tags=$GITEA_TAGS'" \
        -o "$target.partial/bin/gitea" code.gitea.io/gitea
    source=$(go -C "$work" list -m -f '{{.Dir}}' code.gitea.io/gitea) && [ -d "$source/templates" ] \
        || die "Gitea's module source is missing from the module cache after the build"
    cp -r "$source/options" "$source/templates" "$source/public" "$target.partial/share/"
    chmod -R u+w "$target.partial/share"
    output_has "$GITEA_VERSION" "$target.partial/bin/gitea" --version \
        || die "the built gitea does not report version $GITEA_VERSION"
    touch "$target.partial/.complete"
    mv "$target.partial" "$target"
    ln -sfn "gitea-v$GITEA_VERSION" "$dir/current"
    log_info "built $target/bin/gitea in $(( $(date +%s) - started ))s"
}

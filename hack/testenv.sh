#!/usr/bin/env bash
# Builds, caches and checks the local test cluster's components (no downloads of prebuilt
# binaries): Kubernetes control plane + kubectl from Go modules, etcd, kwok, kwokctl, helm, the
# CNCF Distribution registry, actionlint (checks .github/workflows/), an OpenTelemetry Collector
# (OTLP in, OTLP JSON files out: the traces tests read), the Gateway API CRDs (standard
# channel, from the sigs.k8s.io/gateway-api module); Prometheus and the
# container tools (buildah, podman, runc, skopeo, mmdebstrap) from Debian, with their
# configuration under the cache (overlay storage where it mounts, else vfs; runc; no rlimits:
# what works without a Docker daemon). Idempotent: a stamp file per tool version.
#
#   hack/testenv.sh install   build/install everything missing (default)
#   hack/testenv.sh env       print shell exports (PATH, MODELDEPLOY_*, CONTAINERS_*) for the tools
#   hack/testenv.sh peers     build Argo Rollouts' controller and Flagger, copy their CRDs, and
#                             print their exports (for bench/bench_vs_peers.py; not in `install`)
#   hack/testenv.sh peers-env print those exports only (the paths may not be built yet)
# The offline guard (kwokctl must plan no download) runs before every cluster creation, in
# modeldeploy.devenv.cluster.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
REGISTRY_VERSION="${REGISTRY_VERSION:-v3.1.2}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
# The collector's core modules (otelcol, otlpreceiver) and contrib's fileexporter are released
# together under one v0 number.
OTELCOL_VERSION="${OTELCOL_VERSION:-v0.165.0}"
# The newest on the proxy, v1.7.0, declares go 1.27: `go mod download` refuses it with
# GOTOOLCHAIN=local on go1.26. v1.6.3 is the newest that a go1.26 toolchain downloads.
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -trimpath"
BIN_ROOT="$CACHE/bin"
K8S_BIN="$BIN_ROOT/kubernetes-$K8S_VERSION"
ETCD_BIN="$BIN_ROOT/etcd-$ETCD_VERSION"
KWOK_BIN="$BIN_ROOT/kwok-$KWOK_VERSION"
HELM_BIN="$BIN_ROOT/helm-$HELM_VERSION"
REGISTRY_BIN="$BIN_ROOT/registry-$REGISTRY_VERSION"
ACTIONLINT_BIN="$BIN_ROOT/actionlint-$ACTIONLINT_VERSION"
OTELCOL_BIN="$BIN_ROOT/otelcol-$OTELCOL_VERSION"
GATEWAY_API_CRDS="$CACHE/manifests/gateway-api-$GATEWAY_API_VERSION"
KWOK_STAGES="$CACHE/manifests/kwok-stages-$KWOK_VERSION"
CONTAINERS="$CACHE/containers"

START=$(date +%s)
say() { printf '[testenv %4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
stamped() { [[ -f "$1/.stamp" ]]; }
stamp() { date -u +%FT%TZ > "$1/.stamp"; }

build_kubernetes() {
  stamped "$K8S_BIN" && return
  say "kubernetes $K8S_VERSION: cold build (15-30 min on 2 cores; later runs reuse the cache)"
  local src="$CACHE/src/kubernetes-$K8S_VERSION" minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  mkdir -p "$src" "$K8S_BIN"
  say "kubernetes: downloading module k8s.io/kubernetes@$K8S_VERSION"
  local modfile
  modfile="$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # k8s.io/kubernetes replaces its staging modules with ./staging/...; point each at its
  # published v0.<minor>.<patch> instead so that the module builds from the proxy.
  local staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "module modeldeploy.local/kubernetes-wrapper"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$modfile" | awk '{print $1}' | sort -u \
      | while read -r m; do echo "replace $m => $m $staging_version"; done
  } > "$src/go.mod"
  cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  say "kubernetes: resolving dependencies (go mod tidy)"
  (cd "$src" && go mod tidy)
  say "kubernetes: compiling kube-apiserver, kube-controller-manager, kube-scheduler, kubectl"
  local v="k8s.io/component-base/version" cv="k8s.io/client-go/pkg/version"
  local ld="-s -w"
  for pkg in "$v" "$cv"; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$src" && go build -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$K8S_BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  "$K8S_BIN/kube-apiserver" --version | grep -q "$K8S_VERSION"
  stamp "$K8S_BIN"
  say "kubernetes: done"
}

build_etcd() {
  stamped "$ETCD_BIN" && return
  say "etcd $ETCD_VERSION: building"
  local src="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$src" "$ETCD_BIN"
  cat > "$src/go.mod" <<GO
module modeldeploy.local/etcd-wrapper

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GO
  cat > "$src/main.go" <<'GO'
// etcd's own main, built from the published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod tidy && go build -ldflags "-s -w" -o "$ETCD_BIN/etcd" .)
  stamp "$ETCD_BIN"
  say "etcd: done"
}

# An OpenTelemetry Collector with only what the tests use: the OTLP receiver (gRPC and HTTP) and
# contrib's file exporter (OTLP JSON lines a test can parse). The distributions (otelcol,
# otelcol-contrib) are made by the collector's builder from a manifest; this is the program the
# builder would generate for that manifest, written out (the builder itself would be one more
# tool to build and run).
build_otelcol() {
  stamped "$OTELCOL_BIN" && return
  say "otelcol $OTELCOL_VERSION: building (OTLP receiver + file exporter)"
  local src="$CACHE/src/otelcol-$OTELCOL_VERSION"
  mkdir -p "$src" "$OTELCOL_BIN"
  cat > "$src/go.mod" <<GO
module modeldeploy.local/otelcol-wrapper

go 1.26

require (
	go.opentelemetry.io/collector/otelcol $OTELCOL_VERSION
	go.opentelemetry.io/collector/receiver/otlpreceiver $OTELCOL_VERSION
	github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $OTELCOL_VERSION
)
GO
  cat > "$src/main.go" <<GO
// An OpenTelemetry Collector: OTLP receiver, file exporter, configuration from a file
// (--config file:PATH) with \${env:NAME} expansions.
package main

import (
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	receivers, err := otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	exporters, err := otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	return otelcol.Factories{
		Telemetry: otelconftelemetry.NewFactory(),
		Receivers: receivers,
		Exporters: exporters,
	}, nil
}

func main() {
	settings := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol",
			Description: "OpenTelemetry Collector for modeldeploy's tests",
			Version:     "$OTELCOL_VERSION",
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(), fileprovider.NewFactory(),
				},
				DefaultScheme: "env", // \${NAME} in a configuration file (as in otelcol's)
			},
		},
	}
	if err := otelcol.NewCommand(settings).Execute(); err != nil {
		os.Exit(1) // cobra has printed the error
	}
}
GO
  say "otelcol: resolving dependencies (go get)"
  # Not `go mod tidy`: it also resolves the test imports of every package, and one of
  # fileexporter's (contrib's otlpencodingextension v0.165.0) is refused by the module proxy
  # here (403). `go get .` resolves what the build imports, and nothing else.
  (cd "$src" && go get .)
  say "otelcol: compiling"
  (cd "$src" && go build -tags grpcnotrace -ldflags "-s -w" -o "$OTELCOL_BIN/otelcol" .)
  "$OTELCOL_BIN/otelcol" --version | grep -q "${OTELCOL_VERSION#v}"
  stamp "$OTELCOL_BIN"
  say "otelcol: done"
}

install_go_tool() {  # dir version module-path...
  local dir="$1" version="$2"; shift 2
  stamped "$dir" && return
  mkdir -p "$dir"
  for m in "$@"; do
    say "go install $m@$version"
    GOBIN="$dir" go install -ldflags "-s -w" "$m@$version"
  done
  stamp "$dir"
}

install_gateway_api_crds() {
  # The official standard-channel manifests (HTTPRoute, Gateway, GatewayClass, ...), as
  # published in the sigs.k8s.io/gateway-api module; every test cluster gets them.
  stamped "$GATEWAY_API_CRDS" && return
  say "gateway-api $GATEWAY_API_VERSION: standard-channel CRDs from the Go module"
  local dir
  dir="$(cd "$CACHE" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  mkdir -p "$GATEWAY_API_CRDS"
  cp "$dir"/config/crd/standard/*.yaml "$GATEWAY_API_CRDS/"
  chmod u+w "$GATEWAY_API_CRDS"/*.yaml
  stamp "$GATEWAY_API_CRDS"
}

install_kwok_stages() {
  # kwok's own default Stages (node initialise and heartbeat, pod ready/complete/delete), as
  # its module publishes them: test clusters serve Stages from the API (devenv/kwokstages.py)
  # so that a pod runner can add its own, and then kwok loads none of its built-in ones.
  stamped "$KWOK_STAGES" && return
  say "kwok $KWOK_VERSION: default Stage manifests from the Go module"
  local dir
  dir="$(cd "$CACHE" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  mkdir -p "$KWOK_STAGES"
  cp "$dir"/kustomize/stage/node/fast/node-initialize.yaml \
    "$dir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$dir"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$KWOK_STAGES/"
  chmod u+w "$KWOK_STAGES"/*.yaml
  stamp "$KWOK_STAGES"
}

apt_install() {  # package...
  say "$*: apt-get install (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_prometheus() {
  command -v prometheus >/dev/null && return
  apt_install prometheus
  # Debian's package starts nothing here (no systemd); make sure no stray instance runs.
  pkill -x prometheus 2>/dev/null || true
}

# Debian packages this project runs containers with (root, no daemon). Version of the set:
# bump it to make every machine re-check.
CONTAINER_PACKAGES="buildah podman runc skopeo mmdebstrap containernetworking-plugins"
install_container_tools() {
  local missing=()
  for tool in buildah podman runc skopeo mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if (( ${#missing[@]} )); then
    say "container tools: apt-get install $CONTAINER_PACKAGES (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $CONTAINER_PACKAGES >/dev/null
  fi
  write_container_config
}

# The kernel's overlay storage where a test mount works (a container starts in a fraction of a
# second), else vfs (every container start copies its whole image); runc (crun refuses hybrid
# cgroups); cgroupfs; no default rlimits (podman's are refused: "setrlimit RLIMIT_NPROC:
# Operation not permitted"). Everything lives under the cache, not /var/lib/containers.
storage_driver() {
  local probe
  probe="$(mktemp -d "$CONTAINERS/overlay-probe.XXXXXX")"
  mkdir -p "$probe"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
      "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    echo overlay
  else
    echo vfs
  fi
  rm -rf "$probe"
}

write_container_config() {
  mkdir -p "$CONTAINERS/run" "$CONTAINERS/tmp"
  local driver
  driver="$(storage_driver)"
  # One storage directory per driver: a store made by one driver is unreadable by the other.
  mkdir -p "$CONTAINERS/storage-$driver"
  cat > "$CONTAINERS/storage.conf.new" <<CONF
[storage]
driver = "$driver"
graphroot = "$CONTAINERS/storage-$driver"
runroot = "$CONTAINERS/run"
CONF
  cat > "$CONTAINERS/containers.conf.new" <<CONF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$CONTAINERS/tmp"
[engine.runtimes]
runc = ["$(command -v runc)"]
CONF
  # Only the local registry exists; short names never resolve to a public one.
  cat > "$CONTAINERS/registries.conf.new" <<CONF
unqualified-search-registries = []
CONF
  for f in storage.conf containers.conf registries.conf; do
    if cmp -s "$CONTAINERS/$f.new" "$CONTAINERS/$f"; then rm "$CONTAINERS/$f.new"
    else mv "$CONTAINERS/$f.new" "$CONTAINERS/$f"; fi
  done
}

# --- progressive-delivery peers (bench/bench_vs_peers.py only; not part of `install`) ---
ARGO_ROLLOUTS_VERSION="${ARGO_ROLLOUTS_VERSION:-v1.10.1}"
FLAGGER_VERSION="${FLAGGER_VERSION:-v1.44.0}"
ARGO_ROLLOUTS_BIN="$BIN_ROOT/argo-rollouts-$ARGO_ROLLOUTS_VERSION"
FLAGGER_BIN="$BIN_ROOT/flagger-$FLAGGER_VERSION"
PEER_CRDS="$CACHE/manifests/peers-argo-rollouts-$ARGO_ROLLOUTS_VERSION-flagger-$FLAGGER_VERSION"

module_dir() {  # module@version -> its directory in the module cache
  (cd "$CACHE" && go mod download -json "$1") \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

build_argo_rollouts() {
  # Argo Rollouts' go.mod pins its k8s.io modules with replace directives, so `go install
  # ...@version` is refused. A wrapper module requires it and repeats those replaces (none is a
  # local path). v1.10.1, not the newest v1.10.2: that one declares a go newer than ours.
  stamped "$ARGO_ROLLOUTS_BIN" && return
  say "argo-rollouts $ARGO_ROLLOUTS_VERSION: building the controller (wrapper module)"
  local src="$CACHE/src/argo-rollouts-$ARGO_ROLLOUTS_VERSION" dir
  dir="$(module_dir "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION")"
  mkdir -p "$src" "$ARGO_ROLLOUTS_BIN"
  {
    echo "module modeldeploy.local/argo-rollouts-wrapper"
    echo
    grep '^go ' "$dir/go.mod"
    echo
    echo "require github.com/argoproj/argo-rollouts $ARGO_ROLLOUTS_VERSION"
    echo
    sed -n '/^replace (/,/^)/p' "$dir/go.mod"
  } > "$src/go.mod"
  cat > "$src/tools.go" <<GO
//go:build tools

// Keeps the controller's main package in this module's requirements.
package tools

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
GO
  say "argo-rollouts: resolving dependencies (go get)"
  (cd "$src" && go get "github.com/argoproj/argo-rollouts/cmd/rollouts-controller@$ARGO_ROLLOUTS_VERSION")
  say "argo-rollouts: compiling"
  (cd "$src" && go build -ldflags "-s -w \
      -X github.com/argoproj/argo-rollouts/utils/version.version=${ARGO_ROLLOUTS_VERSION#v}" \
    -o "$ARGO_ROLLOUTS_BIN/rollouts-controller" github.com/argoproj/argo-rollouts/cmd/rollouts-controller)
  stamp "$ARGO_ROLLOUTS_BIN"
  say "argo-rollouts: done"
}

install_peer_crds() {
  # Both tools' CRDs as their modules publish them (Argo: manifests/crds; Flagger:
  # artifacts/flagger/crd.yaml), applied by the bench to its cluster.
  stamped "$PEER_CRDS" && return
  say "peers: CRDs from the Argo Rollouts and Flagger modules"
  local argo flagger
  argo="$(module_dir "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION")"
  flagger="$(module_dir "github.com/fluxcd/flagger@$FLAGGER_VERSION")"
  mkdir -p "$PEER_CRDS"
  for f in "$argo"/manifests/crds/*-crd.yaml; do cp "$f" "$PEER_CRDS/argo-rollouts-${f##*/}"; done
  cp "$flagger/artifacts/flagger/crd.yaml" "$PEER_CRDS/flagger-crd.yaml"
  chmod u+w "$PEER_CRDS"/*.yaml
  stamp "$PEER_CRDS"
}

install_peers() {
  mkdir -p "$CACHE"
  build_argo_rollouts
  install_go_tool "$FLAGGER_BIN" "$FLAGGER_VERSION" github.com/fluxcd/flagger/cmd/flagger
  install_peer_crds
  print_peers_env  # on stdout, for the bench (progress went to stderr)
}

print_peers_env() {
  echo "export MODELDEPLOY_ARGO_ROLLOUTS=\"$ARGO_ROLLOUTS_BIN/rollouts-controller\""
  echo "export MODELDEPLOY_FLAGGER=\"$FLAGGER_BIN/flagger\""
  echo "export MODELDEPLOY_PEER_CRDS=\"$PEER_CRDS\""
}

print_env() {
  echo "export PATH=\"$K8S_BIN:$ETCD_BIN:$KWOK_BIN:$HELM_BIN:$ACTIONLINT_BIN:\$PATH\""
  echo "export MODELDEPLOY_K8S_BIN=\"$K8S_BIN\" MODELDEPLOY_ETCD_BIN=\"$ETCD_BIN\""
  echo "export MODELDEPLOY_KWOK_BIN=\"$KWOK_BIN\" MODELDEPLOY_HELM_BIN=\"$HELM_BIN\""
  echo "export MODELDEPLOY_K8S_VERSION=\"$K8S_VERSION\" MODELDEPLOY_REGISTRY_BIN=\"$REGISTRY_BIN\""
  echo "export MODELDEPLOY_OTELCOL_BIN=\"$OTELCOL_BIN\""
  echo "export MODELDEPLOY_GATEWAY_API_CRDS=\"$GATEWAY_API_CRDS\""
  echo "export MODELDEPLOY_KWOK_STAGES=\"$KWOK_STAGES\""
  echo "export CONTAINERS_CONF=\"$CONTAINERS/containers.conf\""
  echo "export CONTAINERS_STORAGE_CONF=\"$CONTAINERS/storage.conf\""
  echo "export CONTAINERS_REGISTRIES_CONF=\"$CONTAINERS/registries.conf\""
}

case "${1:-install}" in
  install)
    mkdir -p "$CACHE"
    install_prometheus
    # Headless, for tests/integration/test_report.py (renders `modeldeploy report`'s page).
    command -v chromium >/dev/null || apt_install chromium
    install_container_tools
    install_go_tool "$KWOK_BIN" "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
    install_kwok_stages
    install_go_tool "$HELM_BIN" "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    install_go_tool "$REGISTRY_BIN" "$REGISTRY_VERSION" \
      github.com/distribution/distribution/v3/cmd/registry
    install_go_tool "$ACTIONLINT_BIN" "$ACTIONLINT_VERSION" github.com/rhysd/actionlint/cmd/actionlint
    build_otelcol
    install_gateway_api_crds
    build_etcd
    build_kubernetes
    say "all components ready in $BIN_ROOT ($(du -sh "$CACHE" | cut -f1) cache)"
    ;;
  env) print_env ;;
  peers) install_peers ;;
  peers-env) print_peers_env ;;
  *) echo "usage: $0 [install|env|peers|peers-env]" >&2; exit 2 ;;
esac

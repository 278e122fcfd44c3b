#!/usr/bin/env bash
# Deno runs the Edge Function snippet (deployments/edge-function) in the tests. It comes from the
# npm registry: the `deno` package's platform package carries the binary, so no download from
# anywhere else is needed. Idempotent; prints the binary's path (and nothing else) on stdout.
#
#   TAM_DENO_HOME     where to install (default: .tam/deno under the repository)
#   TAM_DENO_VERSION  the Deno release (default below)
set -euo pipefail
DENO_VERSION="${TAM_DENO_VERSION:-2.9.6}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENO_HOME="${TAM_DENO_HOME:-$ROOT/.tam/deno}"
FUNCTION="$ROOT/deployments/edge-function/tam-run-job.ts"
DEFAULT_REGISTRY="https://registry.npmjs.org/"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) PLATFORM=linux-x64-glibc ;;
  Linux-aarch64 | Linux-arm64) PLATFORM=linux-arm64-glibc ;;
  Darwin-x86_64) PLATFORM=darwin-x64 ;;
  Darwin-arm64) PLATFORM=darwin-arm64 ;;
  *)
    echo "ensure-deno: no Deno build for $(uname -s) $(uname -m)" >&2
    exit 1
    ;;
esac
DENO="$DENO_HOME/node_modules/@deno/$PLATFORM/deno"

if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "ensure-deno: installing npm (Deno comes from the npm registry)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq nodejs npm >&2
  else
    echo "ensure-deno: npm not found; install Node.js and npm (Deno comes from the npm registry)" >&2
    exit 1
  fi
fi

if ! { [ -x "$DENO" ] && "$DENO" --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; }; then
  echo "ensure-deno: installing deno@$DENO_VERSION into $DENO_HOME..." >&2
  mkdir -p "$DENO_HOME"
  # NOTE: --ignore-scripts: the package's postinstall only rewires its `bin` shim; the binary
  # itself is in the platform package, which npm installs as an optional dependency.
  npm install --prefix "$DENO_HOME" --no-save --no-package-lock --ignore-scripts \
    --no-audit --no-fund --loglevel=error "deno@$DENO_VERSION" >&2
  if ! "$DENO" --version >/dev/null 2>&1; then
    echo "ensure-deno: npm installed deno@$DENO_VERSION but $DENO does not run" >&2
    exit 1
  fi
fi

# Deno fetches the function's npm: imports itself and does not read npm's configuration: hand it
# the registry npm uses here, then fill Deno's cache now rather than during a test.
REGISTRY="$(npm config get registry 2>/dev/null || true)"
if [ -n "$REGISTRY" ] && [ "$REGISTRY" != "$DEFAULT_REGISTRY" ] && [ -z "${NPM_CONFIG_REGISTRY:-}" ]; then
  export NPM_CONFIG_REGISTRY="$REGISTRY"
fi
if [ -f "$FUNCTION" ]; then
  "$DENO" cache --quiet "$FUNCTION" >&2
fi
echo "$DENO"

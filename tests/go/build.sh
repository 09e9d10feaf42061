#!/usr/bin/env bash
# Puts the Go end-to-end pipeline (tests/go/main.go, Beam Go SDK v2.77.0 from the Go module
# proxy, checked against go.sum) at <repo>/.tools/bin/crossinfer-go-e2e.
#
# Idempotent. A built binary is also kept in ~/.cache/crossinfer (override: CROSSINFER_CACHE),
# named by a hash of the sources and the Go version, so fresh clones on the same machine (CI)
# copy it instead of building again (the first build compiles the Beam Go SDK: minutes). Go's
# own module cache keeps the downloaded modules.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/tests/go"
BIN="$ROOT/.tools/bin"
CACHE="${CROSSINFER_CACHE:-$HOME/.cache/crossinfer}"
command -v go >/dev/null || { echo "go-e2e: Go is not installed" >&2; exit 1; }
VERSION="$(cat "$SRC"/go.mod "$SRC"/go.sum "$SRC"/*.go | sha256sum | cut -c1-12)-$(go env GOVERSION)"
CACHED="$CACHE/crossinfer-go-e2e-$VERSION"

if [[ -x "$BIN/crossinfer-go-e2e" && "$(cat "$BIN/crossinfer-go-e2e.version" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
mkdir -p "$BIN" "$CACHE"
if [[ ! -x "$CACHED" ]]; then
  echo "go-e2e: building the Go end-to-end pipeline (a few minutes the first time)" >&2
  (cd "$SRC" && GOFLAGS=-mod=readonly go build -o "$CACHED.tmp" .)
  mv "$CACHED.tmp" "$CACHED"
fi
cp "$CACHED" "$BIN/crossinfer-go-e2e.tmp" && mv "$BIN/crossinfer-go-e2e.tmp" "$BIN/crossinfer-go-e2e"
echo "$VERSION" > "$BIN/crossinfer-go-e2e.version"
echo "go-e2e: $BIN/crossinfer-go-e2e ($VERSION)" >&2

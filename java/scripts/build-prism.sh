#!/usr/bin/env bash
# Puts Beam's Prism runner at <repo>/.tools/bin/prism, built from the Go module proxy
# (go install github.com/apache/beam/sdks/v2/go/cmd/prism@VERSION), pinned to the Beam version of
# the Python side. Never downloads a prebuilt binary.
#
# Idempotent. A built binary is also kept in ~/.cache/crossinfer (override: CROSSINFER_CACHE),
# so fresh clones on the same machine (CI) copy it instead of building again.
set -euo pipefail
BEAM_GO_VERSION="${BEAM_GO_VERSION:-v2.77.0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.tools/bin"
CACHE="${CROSSINFER_CACHE:-$HOME/.cache/crossinfer}"
CACHED="$CACHE/prism-$BEAM_GO_VERSION"

if [[ -x "$BIN/prism" && "$(cat "$BIN/prism.version" 2>/dev/null)" == "$BEAM_GO_VERSION" ]]; then
  exit 0
fi
mkdir -p "$BIN"
if [[ ! -x "$CACHED" ]]; then
  command -v go >/dev/null || { echo "build-prism: Go is not installed" >&2; exit 1; }
  echo "build-prism: go install prism@$BEAM_GO_VERSION (a few minutes the first time)" >&2
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  GOBIN="$TMP" GOFLAGS=-mod=mod go install "github.com/apache/beam/sdks/v2/go/cmd/prism@$BEAM_GO_VERSION"
  mkdir -p "$CACHE"
  cp "$TMP/prism" "$CACHED.tmp" && mv "$CACHED.tmp" "$CACHED"
fi
cp "$CACHED" "$BIN/prism.tmp" && mv "$BIN/prism.tmp" "$BIN/prism"
echo "$BEAM_GO_VERSION" > "$BIN/prism.version"
echo "build-prism: $BIN/prism ($BEAM_GO_VERSION)" >&2

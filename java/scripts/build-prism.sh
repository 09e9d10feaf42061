#!/usr/bin/env bash
# Puts Beam's Prism runner at <repo>/.tools/bin/prism, built from Beam's Go module (fetched through
# the Go module proxy, checked against the Go checksum database), pinned to the Beam version of the
# Python side, with the patches in java/scripts/prism-patches applied (each says which Prism defect
# it fixes and what it measured). Never downloads a prebuilt binary.
#
# Idempotent. A built binary is also kept in ~/.cache/crossinfer (override: CROSSINFER_CACHE),
# named by the Beam version and a hash of the patches, so fresh clones on the same machine (CI)
# copy it instead of building again.
set -euo pipefail
BEAM_GO_VERSION="${BEAM_GO_VERSION:-v2.77.0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.tools/bin"
CACHE="${CROSSINFER_CACHE:-$HOME/.cache/crossinfer}"
PATCHES="$ROOT/java/scripts/prism-patches"
PATCH_ID="$(cat "$PATCHES"/*.patch | sha256sum | cut -c1-12)"
VERSION="$BEAM_GO_VERSION+$PATCH_ID"
CACHED="$CACHE/prism-$VERSION"

if [[ -x "$BIN/prism" && "$(cat "$BIN/prism.version" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
mkdir -p "$BIN"
if [[ ! -x "$CACHED" ]]; then
  command -v go >/dev/null || { echo "build-prism: Go is not installed" >&2; exit 1; }
  echo "build-prism: building prism $BEAM_GO_VERSION + patches (a few minutes the first time)" >&2
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  MODULE="github.com/apache/beam/sdks/v2@$BEAM_GO_VERSION"
  SRC="$(cd "$TMP" && GOFLAGS=-mod=mod go mod download -json "$MODULE" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$SRC/go/cmd/prism" ]] || { echo "build-prism: go mod download $MODULE gave no source" >&2; exit 1; }
  mkdir "$TMP/src"
  cp -r "$SRC/go" "$SRC/go.mod" "$SRC/go.sum" "$TMP/src/"
  chmod -R u+w "$TMP/src"  # the module cache is read-only
  for patch in "$PATCHES"/*.patch; do
    patch -s -p1 -d "$TMP/src" < "$patch"
  done
  (cd "$TMP/src" && GOFLAGS=-mod=mod go build -o "$TMP/prism" ./go/cmd/prism)
  mkdir -p "$CACHE"
  cp "$TMP/prism" "$CACHED.tmp" && mv "$CACHED.tmp" "$CACHED"
fi
cp "$CACHED" "$BIN/prism.tmp" && mv "$BIN/prism.tmp" "$BIN/prism"
echo "$VERSION" > "$BIN/prism.version"
echo "build-prism: $BIN/prism ($VERSION)" >&2

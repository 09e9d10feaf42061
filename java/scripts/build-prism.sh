#!/usr/bin/env bash
# Builds Beam's Prism runner from the Go module proxy into <repo>/.tools/bin/prism, pinned to
# the Beam version of the Python side. Idempotent: does nothing when the binary is there.
# Never downloads a prebuilt binary.
set -euo pipefail
BEAM_GO_VERSION="${BEAM_GO_VERSION:-v2.77.0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.tools/bin"
if [[ -x "$BIN/prism" && "$(cat "$BIN/prism.version" 2>/dev/null)" == "$BEAM_GO_VERSION" ]]; then
  exit 0
fi
mkdir -p "$BIN"
echo "building prism $BEAM_GO_VERSION into $BIN (go install, a few minutes the first time)" >&2
GOBIN="$BIN" GOFLAGS=-mod=mod go install "github.com/apache/beam/sdks/v2/go/cmd/prism@$BEAM_GO_VERSION"
echo "$BEAM_GO_VERSION" > "$BIN/prism.version"

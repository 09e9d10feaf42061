#!/usr/bin/env bash
# Puts the classpath of the Flink job server and of a standalone Flink cluster at
# <repo>/.tools/flink/lib: the jars java/flink/pom.xml resolves from Maven Central
# (org.apache.beam:beam-runners-flink-1.19:2.62.0 with Flink 1.19.0, plus slf4j-simple), about
# 160 jars, 150 MB, and the module's own small jar (io.crossinfer.flink.ClusterJobServer). The
# launchers io.crossinfer.launch.FlinkCluster and FlinkJobServer run `java -cp .tools/flink/lib/*`.
# Downloads nothing but Maven artifacts.
#
# Idempotent. The jars are kept in ~/.cache/crossinfer (override: CROSSINFER_CACHE), in a
# directory named by a hash of java/flink (pom and sources), and .tools/flink/lib links to it, so
# fresh clones on the same machine (CI) reuse them instead of resolving and copying 150 MB again.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODULE="$ROOT/java/flink"
TOOLS="$ROOT/.tools/flink"
CACHE="${CROSSINFER_CACHE:-$HOME/.cache/crossinfer}"
HASH="$(cd "$MODULE" && find pom.xml src -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)"
VERSION="flink-1.19-beam-2.62.0+$HASH"
CACHED="$CACHE/$VERSION"

if [[ -d "$TOOLS/lib" && "$(cat "$TOOLS/version" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
if [[ ! -f "$CACHED/complete" ]]; then
  command -v mvn >/dev/null || { echo "build-flink: Maven (mvn) is not installed" >&2; exit 1; }
  echo "build-flink: building $VERSION from Maven (a minute the first time)" >&2
  rm -rf "$CACHED.tmp"
  mvn -B -q -ntp -Dstyle.color=never -f "$MODULE/pom.xml" package dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$CACHED.tmp/lib"
  cp "$MODULE"/target/crossinfer-flink-job-server-*.jar "$CACHED.tmp/lib/"
  ls "$CACHED.tmp/lib"/beam-runners-flink-1.19-2.62.0.jar >/dev/null
  touch "$CACHED.tmp/complete"
  rm -rf "$CACHED" && mv "$CACHED.tmp" "$CACHED"
fi
mkdir -p "$TOOLS"
ln -sfn "$CACHED/lib" "$TOOLS/lib"
echo "$VERSION" > "$TOOLS/version"
echo "build-flink: $TOOLS/lib -> $CACHED/lib ($(ls "$CACHED/lib" | wc -l) jars)" >&2

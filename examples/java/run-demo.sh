#!/usr/bin/env bash
# Runs the Java demo (DigitsDemo) from the repository root: builds the Java SDK and the examples,
# then runs an A/B test and a sequence on the digits through the crossinfer expansion service on
# a local portable runner. Arguments go to the demo, e.g. --runner=prism --limit=500, or
# --runner=flink (a local Flink cluster: 1 JobManager + 2 TaskManagers, Beam's Flink job server).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
ARGS="${*:-}"
if [[ " $ARGS " == *" --runner=prism "* ]]; then
  bash java/scripts/build-prism.sh
fi
if [[ " $ARGS " == *" --runner=flink "* ]]; then
  bash java/scripts/build-flink.sh
fi
exec mvn -B -q -ntp -Dstyle.color=never -f java/pom.xml test-compile exec:java \
  -Dexec.mainClass=io.crossinfer.examples.DigitsDemo -Dexec.args="$ARGS"

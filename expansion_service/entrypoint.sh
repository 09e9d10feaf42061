#!/usr/bin/env sh
# The container's entry point: every argument goes to the expansion service.
exec crossinfer-expansion-service "$@"

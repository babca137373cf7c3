#!/bin/sh
# Start-up time, idle RSS and peak RSS under a flood of 300 logins of a
# -trimpath build of hearth (see scripts/bench/memory/main.go):
#
#   scripts/bench/memory.sh [-logins 300] [-starts 5] [-idle 3s]
#
# HEARTH_BENCH_BASELINE=<git revision> also measures hearth built from that
# revision, side by side in the same run (e.g. HEARTH_BENCH_BASELINE=HEAD~1).
set -eu
cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -trimpath -o "$tmp/hearth" ./cmd/hearth
go build -o "$tmp/memory-bench" ./scripts/bench/memory
if [ -n "${HEARTH_BENCH_BASELINE:-}" ]; then
	mkdir "$tmp/src"
	git archive "$HEARTH_BENCH_BASELINE" | tar -x -C "$tmp/src"
	(cd "$tmp/src" && go build -trimpath -o "$tmp/baseline" ./cmd/hearth)
	echo "baseline: hearth at $(git rev-parse --short "$HEARTH_BENCH_BASELINE")"
	set -- -baseline "$tmp/baseline" "$@"
fi
echo "$(nproc) CPUs, $(uname -m); hearth at $(git rev-parse --short HEAD)"
"$tmp/memory-bench" -hearth "$tmp/hearth" "$@"

#!/usr/bin/env bash
# Audit log benchmarks: durable appends (group commit, one fdatasync per
# batch) with 1, 16 and 64 concurrent writers on the disk under the temp
# dir, and verification speed. Prints Go benchmark lines; compare runs with
# benchstat. Usage:
#   scripts/bench/audit.sh [count]     (default count 5: medians need several)
# HEARTH_BENCH_BASELINE=<git revision> also builds the audit benchmarks of
# that revision and runs the two builds alternately, count times each, so
# that before/after figures come from one run on the same (shared) machine;
# lines of the baseline are prefixed "baseline:".
set -euo pipefail
cd "$(dirname "$0")/../.."
count="${1:-5}"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), temp dir on $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2{print $2}')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/new.test" ./audit/
bins=("$tmp/new.test")
if [ -n "${HEARTH_BENCH_BASELINE:-}" ]; then
	mkdir "$tmp/src"
	git archive "$HEARTH_BENCH_BASELINE" | tar -x -C "$tmp/src"
	(cd "$tmp/src" && go test -c -o "$tmp/baseline.test" ./audit/)
	echo "# baseline: $(git rev-parse --short "$HEARTH_BENCH_BASELINE") ($(git log -1 --format=%s "$HEARTH_BENCH_BASELINE" | cut -c1-60))"
	bins+=("$tmp/baseline.test")
fi
for ((i = 0; i < count; i++)); do
	for bin in "${bins[@]}"; do
		prefix=""
		[ "$bin" = "$tmp/baseline.test" ] && prefix="baseline: "
		(cd audit && "$bin" -test.run '^$' -test.bench 'BenchmarkRecord' -test.benchtime 3s -test.count 1) | grep '^Benchmark' | sed "s/^/$prefix/"
	done
done
for bin in "${bins[@]}"; do
	prefix=""
	[ "$bin" = "$tmp/baseline.test" ] && prefix="baseline: "
	(cd audit && "$bin" -test.run '^$' -test.bench 'BenchmarkVerify' -test.benchtime 3x -test.count "$count") | grep '^Benchmark' | sed "s/^/$prefix/"
done
echo "# done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"

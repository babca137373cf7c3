#!/usr/bin/env bash
# Audit log benchmarks: durable appends (group commit) with 1, 8, 16 and 64
# concurrent writers on the disk under the temp dir, and verification speed.
# Prints Go benchmark lines; compare runs with benchstat. Usage:
#   scripts/bench/audit.sh [count]     (default count 5: medians need several)
set -euo pipefail
cd "$(dirname "$0")/../.."
count="${1:-5}"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), temp dir on $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2{print $2}')"
go test -run '^$' -bench 'BenchmarkRecord' -benchtime 3s -count "$count" ./audit/
go test -run '^$' -bench 'BenchmarkVerify' -benchtime 3x -count "$count" ./audit/

#!/bin/sh
# Replicas side by side, in one run, interleaved round by round: one hearth
# on bbolt, one on PostgreSQL, two on one PostgreSQL database (load spread
# over both) — gateway keep-alive requests (device certificate, authorized,
# audited, proxied to the sample agent), password logins, and enrollments
# (token + CSR -> certificate). Real `hearth serve` processes; PostgreSQL is
# a throwaway cluster (internal/pgtest) with fsync on, so that both stores
# pay for durable commits. Prints each round and the medians.
#
#   scripts/bench/replicas.sh [rounds] [seconds-per-measurement] [keep-alive-clients]
set -eu
cd "$(dirname "$0")/../.."
HEARTH_BENCH_ROUNDS=${1:-3} HEARTH_BENCH_SECONDS=${2:-3} HEARTH_BENCH_CLIENTS=${3:-16} HEARTH_PGTEST_FSYNC=on \
	go test -run '^$' -bench '^BenchmarkReplicas$' -benchtime 1x -timeout 30m ./cmd/hearth/

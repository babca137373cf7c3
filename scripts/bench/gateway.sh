#!/bin/sh
# Benchmarks hearth's mTLS gateway against a minimal Go mTLS reverse proxy
# and (when installed: apt-get install -y nginx) nginx with
# ssl_verify_client on, in one run. See scripts/bench/gateway/main.go.
#
#   scripts/bench/gateway.sh [-duration 5s] [-clients 32[,128]] [-rate 1000] [-rounds 3] [-audit mem|disk] [-measure keepalive,newconn,paced] [-nginx auto|off]
#
# HEARTH_BENCH_BASELINE=<git revision> also runs the hearth gateway built
# from that revision, side by side as "baseline": before/after figures of
# a change in one run (e.g. HEARTH_BENCH_BASELINE=HEAD~1).
set -eu
cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bin="$tmp/gateway-bench"
go build -o "$bin" ./scripts/bench/gateway
if [ -n "${HEARTH_BENCH_BASELINE:-}" ]; then
	mkdir "$tmp/src"
	git archive "$HEARTH_BENCH_BASELINE" | tar -x -C "$tmp/src"
	(cd "$tmp/src" && go build -o "$tmp/baseline-bench" ./scripts/bench/gateway)
	echo "baseline: hearth at $(git rev-parse --short "$HEARTH_BENCH_BASELINE") ($(git log -1 --format=%s "$HEARTH_BENCH_BASELINE" | cut -c1-60))"
	set -- -baseline "$tmp/baseline-bench" "$@"
fi
"$bin" "$@"

#!/bin/sh
# Benchmarks hearth's mTLS gateway against a minimal Go mTLS reverse proxy
# and (when installed: apt-get install -y nginx) nginx with
# ssl_verify_client on, in one run. See scripts/bench/gateway/main.go.
#
#   scripts/bench/gateway.sh [-duration 5s] [-clients 32] [-rate 1000] [-nginx auto|off]
set -eu
cd "$(dirname "$0")/../.."
bin="$(mktemp -d)/gateway-bench"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./scripts/bench/gateway
"$bin" "$@"

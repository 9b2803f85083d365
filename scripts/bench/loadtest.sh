#!/usr/bin/env bash
# Builds the release binaries and runs the load generator with the given arguments:
#
#   scripts/bench/loadtest.sh connect --url ws://127.0.0.1:8080/ws --connections 19000 --rate 10000 --hold 60
#   scripts/bench/loadtest.sh fanout  --url ws://127.0.0.1:8080/ws --subscribers 1000 --projects 10 --rate 1500
#   scripts/bench/loadtest.sh streams --url ws://127.0.0.1:8080/ws --streams 10 --viewers 50 --rate 150 --as both
#   scripts/bench/loadtest.sh forward --url ws://127.0.0.1:8080/ws --clients 20 --duration 30
#   scripts/bench/loadtest.sh --help
#
# Targets are loopback only. See docs/benchmarks.md for the published runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet -p loadtest >&2
exec target/release/loadtest "$@"

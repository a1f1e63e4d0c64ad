#!/usr/bin/env bash
# Runs baton's benchmarks and prints their figures (not timed tests).
#   scripts/bench.sh          full run (about a minute)
#   scripts/bench.sh --quick  short run
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p baton-engine --bench store_only
cargo bench -p baton-engine --bench embedded -- "$@"

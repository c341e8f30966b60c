#!/usr/bin/env bash
# End-to-end latency benchmark: MariaDB commit → pikachu → webhook receiver
# at a steady rate (BENCH_RATE, default 1000/s, for BENCH_SECONDS, default 10).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/mariadb.sh start >/dev/null
# A user that may write the benchmark table (pikachu's own user only reads).
bash scripts/mariadb.sh shell -e "CREATE USER IF NOT EXISTS 'bench'@'%' IDENTIFIED BY 'bench';
  GRANT ALL ON pikachu_demo.* TO 'bench'@'%';"
cargo build --release --quiet
runs="${BENCH_RUNS:-3}"
for i in $(seq 1 "$runs"); do
    cargo run --release --quiet --example bench_e2e_latency
done

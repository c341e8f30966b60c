#!/usr/bin/env bash
# pikachu's benchmark suite: one command, on the local dev MariaDB.
#
#   scripts/bench.sh                 # everything, 5 interleaved runs each
#   BENCH_RUNS=3 BENCH_ROWS=500000 scripts/bench.sh
#   BENCH_BASELINE=main~1 scripts/bench.sh   # + rows for that commit's binary
#
# Starts the dev MariaDB (scripts/mariadb.sh, port 3407), builds pikachu and
# the benchmark programs in release mode, installs python-mysql-replication
# (pip) and builds the other readers (bench/readers, crates.io), then runs
# scripts/bench.py, which prints a table and rewrites the generated part of
# docs/benchmarks.md. See scripts/bench.py for the settings.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/mariadb.sh start >/dev/null
echo "building (release)…" >&2
cargo build --release --quiet --bin pikachu \
    --example bench_raw_stream --example bench_receiver --example bench_e2e_latency
# mysql_cdc (bench/readers) links OpenSSL.
if ! pkg-config --exists openssl 2>/dev/null; then
    echo "installing libssl-dev and pkg-config (apt-get) for bench/readers…" >&2
    sudo=(); [[ "$(id -u)" != 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq libssl-dev pkg-config
fi
export BENCH_READERS_TARGET="${BENCH_READERS_TARGET:-$REPO_ROOT/bench/readers/target}"
CARGO_TARGET_DIR="$BENCH_READERS_TARGET" cargo build --release --quiet \
    --manifest-path bench/readers/Cargo.toml
# The delivery rows compare single-POST delivery with wrk (Debian package).
if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (apt-get) for the delivery comparison…" >&2
    sudo=(); [[ "$(id -u)" != 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq wrk
fi
# BENCH_BASELINE=<git revision>: build that revision's pikachu (cached by
# commit under target/bench-baseline/) and run it beside this one.
if [[ -n "${BENCH_BASELINE:-}" ]]; then
    rev="$(git rev-parse --verify "${BENCH_BASELINE}^{commit}")"
    base_dir="$REPO_ROOT/target/bench-baseline/$rev"
    if [[ ! -x "$base_dir/pikachu" ]]; then
        echo "building the baseline ${BENCH_BASELINE} ($rev, release)…" >&2
        tree="$(mktemp -d)"
        git worktree add --detach --quiet "$tree" "$rev"
        CARGO_TARGET_DIR="$REPO_ROOT/target/bench-baseline/build" \
            cargo build --release --quiet --bin pikachu --manifest-path "$tree/Cargo.toml"
        mkdir -p "$base_dir"
        cp "$REPO_ROOT/target/bench-baseline/build/release/pikachu" "$base_dir/pikachu"
        git worktree remove --force "$tree"
    fi
    export PIKACHU_BASELINE="$base_dir/pikachu"
fi
python3 -c 'import pymysqlreplication' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check mysql-replication
exec python3 scripts/bench.py "$@"

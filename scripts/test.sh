#!/usr/bin/env bash
# The project's one test command, for people and CI alike:
#   scripts/test.sh [cargo test args...]     e.g. scripts/test.sh --test harness_selftest
#
# Integration tests start their own private mariadbd processes (see
# tests/support/mariadb.rs), so this only makes sure MariaDB is installed;
# it does not need (or touch) a running server.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

if [[ ! -x /usr/sbin/mariadbd ]] && ! command -v mariadbd >/dev/null 2>&1; then
    bash scripts/mariadb.sh install
fi

# Binlog files captured from real servers, for the conformance tests: the
# `shared/binlog-corpus` folder beside the checkout (../shared), or beside
# one of its parent folders when the checkout sits deeper. Without it the
# conformance test says that it did not run.
if [[ -z "${PIKACHU_BINLOG_CORPUS:-}" ]]; then
    dir="$(dirname "$REPO_ROOT")"
    while :; do
        if [[ -d "$dir/shared/binlog-corpus" ]]; then
            PIKACHU_BINLOG_CORPUS="$(cd "$dir/shared/binlog-corpus" && pwd)"
            export PIKACHU_BINLOG_CORPUS
            break
        fi
        [[ "$dir" == / ]] && break
        dir="$(dirname "$dir")"
    done
fi
echo "binlog corpus: ${PIKACHU_BINLOG_CORPUS:-not found (conformance over real MySQL files will not run)}" >&2

# The signature test checks our Standard Webhooks signatures with the
# reference Python implementation (PyPI `standardwebhooks`), not our code.
if ! python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check standardwebhooks
fi

# The `/metrics` tests validate the exposition with the reference Python
# OpenMetrics parser (PyPI `prometheus_client`), besides the Rust one.
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check prometheus_client
fi

# Plain `cargo test`: unit, integration and doc tests. Not --all-targets,
# which would also build and run the benches (clippy in .ci/run checks them).
exec cargo test "$@"

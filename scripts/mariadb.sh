#!/usr/bin/env bash
# A private MariaDB server for developing and trying pikachu by hand.
#
#   scripts/mariadb.sh install   install mariadb-server (apt-get) if mariadbd is missing
#   scripts/mariadb.sh start     initialise (once) and start the server in the background
#   scripts/mariadb.sh stop      stop the server this script started
#   scripts/mariadb.sh status    running or not, port, datadir, SHOW MASTER STATUS
#   scripts/mariadb.sh shell     mariadb client as root on the server's socket (args passed on)
#   scripts/mariadb.sh env       print export lines for PIKACHU_MARIADB_*
#
# Settings (environment):
#   PIKACHU_MARIADB_DIR   state folder (default: <repo>/.mariadb, git-ignored)
#   PIKACHU_MARIADB_PORT  TCP port on 127.0.0.1 (default: 3407)
#
# The server writes a ROW binlog with full row images and full metadata,
# has server_id 1, and has user pikachu/pikachu (from anywhere) with exactly
# SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.*, and a database
# pikachu_demo. root has no password and is meant for the socket (`shell`).
# It never touches the system's own MariaDB (no defaults files are read).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${PIKACHU_MARIADB_DIR:-$REPO_ROOT/.mariadb}"
PORT="${PIKACHU_MARIADB_PORT:-3407}"
DATADIR="$DIR/data"
BINLOG_DIR="$DIR/binlog"
SOCKET="$DIR/mysqld.sock"
PID_FILE="$DIR/mysqld.pid"
ERROR_LOG="$DIR/error.log"
START_TIMEOUT="${PIKACHU_MARIADB_START_TIMEOUT:-30}"
STOP_TIMEOUT="${PIKACHU_MARIADB_STOP_TIMEOUT:-60}"

die() {
    echo "mariadb.sh: $*" >&2
    exit 1
}

find_mariadbd() {
    local candidate
    for candidate in /usr/sbin/mariadbd /usr/local/sbin/mariadbd; do
        if [[ -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    command -v mariadbd 2>/dev/null || return 1
}

need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: run scripts/mariadb.sh install (or apt-get install mariadb-server mariadb-client)"
}

cmd_install() {
    if find_mariadbd >/dev/null; then
        echo "mariadbd is installed: $(find_mariadbd)"
        return 0
    fi
    echo "mariadbd not found: installing mariadb-server with apt-get"
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install mariadb-server yourself"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends mariadb-server mariadb-client
    find_mariadbd >/dev/null || die "mariadbd still not found after installing mariadb-server"
    echo "mariadbd is installed: $(find_mariadbd)"
}

# The pid of our server if it is alive, else nothing (and status 1).
server_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Make sure the pid is still a mariadbd (not a recycled pid).
    local comm
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == mariadbd || "$comm" == mysqld ]] || return 1
    echo "$pid"
}

ping() {
    mariadb-admin --no-defaults --protocol=socket --socket="$SOCKET" -uroot \
        --connect-timeout=2 ping >/dev/null 2>&1
}

root_sql() {
    mariadb --no-defaults --protocol=socket --socket="$SOCKET" -uroot --batch "$@"
}

print_connect_help() {
    cat <<EOF
MariaDB for pikachu is running on 127.0.0.1:$PORT (datadir $DATADIR)
  as the CDC user:  mariadb --no-defaults -h127.0.0.1 -P$PORT -upikachu -ppikachu pikachu_demo
  mysql URL:        mysql://pikachu:pikachu@127.0.0.1:$PORT/pikachu_demo
  as root:          scripts/mariadb.sh shell    (socket $SOCKET)
  stop it:          scripts/mariadb.sh stop
EOF
}

ensure_users() {
    # Kept out of the binlog: the binlog is what pikachu reads.
    root_sql <<'EOF'
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'pikachu'@'%' IDENTIFIED BY 'pikachu';
CREATE USER IF NOT EXISTS 'pikachu'@'localhost' IDENTIFIED BY 'pikachu';
ALTER USER 'pikachu'@'%' IDENTIFIED BY 'pikachu';
ALTER USER 'pikachu'@'localhost' IDENTIFIED BY 'pikachu';
REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'pikachu'@'%';
REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'pikachu'@'localhost';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'pikachu'@'%';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'pikachu'@'localhost';
CREATE DATABASE IF NOT EXISTS pikachu_demo;
EOF
}

cmd_start() {
    if pid="$(server_pid)" && ping; then
        echo "already running (pid $pid)"
        print_connect_help
        return 0
    fi
    if ! find_mariadbd >/dev/null; then
        cmd_install
    fi
    local mariadbd
    mariadbd="$(find_mariadbd)"
    need_tool mariadb-install-db
    need_tool mariadb-admin
    need_tool mariadb

    if pid="$(server_pid)"; then
        die "a server (pid $pid) owns $PID_FILE but does not answer; see $ERROR_LOG or run scripts/mariadb.sh stop"
    fi

    # Someone else on the port? Fail early with a clear message.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "port $PORT on 127.0.0.1 is already in use; set PIKACHU_MARIADB_PORT to another port"
    fi

    mkdir -p "$DIR" "$BINLOG_DIR"
    local user_args=()
    if [[ "$(id -u)" == 0 ]]; then
        user_args=(--user=root)
    fi

    if [[ ! -d "$DATADIR/mysql" ]]; then
        echo "initialising $DATADIR"
        rm -rf "$DATADIR"
        if ! mariadb-install-db --no-defaults --datadir="$DATADIR" "${user_args[@]}" \
            --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
            --innodb-log-file-size=16M >"$DIR/install.log" 2>&1; then
            tail -n 30 "$DIR/install.log" >&2 || true
            rm -rf "$DATADIR"
            die "mariadb-install-db failed (log: $DIR/install.log)"
        fi
    fi

    echo "starting mariadbd on 127.0.0.1:$PORT"
    rm -f "$PID_FILE"
    # --log-basename must come first: it resets the names of the other logs.
    # setsid detaches the server from this shell (no SIGHUP/SIGINT from the terminal).
    setsid "$mariadbd" --no-defaults \
        --log-basename=mysql \
        --datadir="$DATADIR" \
        --port="$PORT" \
        --bind-address=127.0.0.1 \
        --socket="$SOCKET" \
        --pid-file="$PID_FILE" \
        --log-error="$ERROR_LOG" \
        "${user_args[@]}" \
        --skip-name-resolve \
        --innodb-log-file-size=16M \
        --character-set-server=utf8mb4 \
        --log-bin="$BINLOG_DIR/mysql-bin" \
        --binlog-format=ROW \
        --binlog-row-image=FULL \
        --binlog-row-metadata=FULL \
        --server-id=1 \
        </dev/null >>"$DIR/mariadbd.out" 2>&1 &
    local launched=$!

    local deadline=$((SECONDS + START_TIMEOUT))
    until ping; do
        if ! kill -0 "$launched" 2>/dev/null && ! server_pid >/dev/null; then
            echo "mariadbd exited during start-up; last lines of $ERROR_LOG:" >&2
            tail -n 30 "$ERROR_LOG" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "mariadbd did not answer within ${START_TIMEOUT}s; last lines of $ERROR_LOG:" >&2
            tail -n 30 "$ERROR_LOG" >&2 || true
            exit 1
        fi
        sleep 0.05 # poll interval
    done

    ensure_users
    print_connect_help
}

cmd_stop() {
    local pid
    if ! pid="$(server_pid)"; then
        echo "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    echo "stopping mariadbd (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "mariadbd (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.05 # poll interval
    done
    echo "stopped"
}

cmd_status() {
    local pid
    if pid="$(server_pid)" && ping; then
        echo "running (pid $pid) on 127.0.0.1:$PORT"
        echo "datadir: $DATADIR"
        echo "socket:  $SOCKET"
        root_sql --table -e 'SHOW MASTER STATUS'
    else
        echo "not running (port $PORT, datadir $DATADIR)"
        return 3
    fi
}

cmd_shell() {
    need_tool mariadb
    server_pid >/dev/null || die "not running: scripts/mariadb.sh start"
    exec mariadb --no-defaults --protocol=socket --socket="$SOCKET" -uroot "$@"
}

cmd_env() {
    echo "export PIKACHU_MARIADB_PORT=$PORT"
    echo "export PIKACHU_MARIADB_DIR=$DIR"
    echo "export PIKACHU_MARIADB_SOCKET=$SOCKET"
    echo "export PIKACHU_MARIADB_URL=mysql://pikachu:pikachu@127.0.0.1:$PORT/pikachu_demo"
}

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        shell) cmd_shell "$@" ;;
        env) cmd_env ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# Quick start: runs pikachu for real against a local binlog-enabled MariaDB
# and shows webhooks arriving.
#
#   scripts/demo.sh          start MariaDB (scripts/mariadb.sh), a printing
#                            webhook receiver and pikachu; make some changes;
#                            print the webhooks; stop pikachu and the receiver.
#   scripts/demo.sh --keep   leave pikachu and the receiver running afterwards
#                            (make your own changes with: scripts/mariadb.sh shell pikachu_demo)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1

PORT="${PIKACHU_MARIADB_PORT:-3407}"
DIR="${PIKACHU_MARIADB_DIR:-$REPO_ROOT/.mariadb}"
RECEIVER_ADDR="${PIKACHU_DEMO_RECEIVER:-127.0.0.1:9000}"
HEALTH_PORT="${PIKACHU_DEMO_HEALTH_PORT:-18080}"

bash scripts/mariadb.sh start
echo "== building pikachu"
cargo build --quiet
BIN="$REPO_ROOT/target/debug/pikachu"

mkdir -p "$DIR/demo"
CONFIG="$DIR/demo/config.yaml"
cat > "$CONFIG" <<YAML
database:
  host: "127.0.0.1"
  port: $PORT
  user: "pikachu"
  password: "\${PIKACHU_DEMO_PASSWORD:-pikachu}"
  database: "pikachu_demo"
  server_id: 4242
log:
  level: "info"
  format: "text"
server:
  enabled: true
  port: $HEALTH_PORT
  path: "/health"
state_dir: "$DIR/demo/state"
tasks:
- task_id: "user_monitor"
  name: "users table"
  table_name: "users"
  events: ["insert", "update", "delete"]
  callback_url: "http://$RECEIVER_ADDR/webhook/user"
YAML

bash scripts/mariadb.sh shell pikachu_demo -e "CREATE TABLE IF NOT EXISTS users (
  id INT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(64) NOT NULL,
  email VARCHAR(128),
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP)"

RECEIVER_LOG="$DIR/demo/receiver.out"
: > "$RECEIVER_LOG"
"$BIN" demo-receiver --listen "$RECEIVER_ADDR" > >(tee "$RECEIVER_LOG") 2>&1 &
RECEIVER_PID=$!
"$BIN" -config "$CONFIG" 2> "$DIR/demo/pikachu.log" &
PIKACHU_PID=$!
cleanup() {
    if [[ $KEEP == 0 ]]; then
        kill "$PIKACHU_PID" "$RECEIVER_PID" 2>/dev/null || true
        wait "$PIKACHU_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

echo "== waiting for pikachu (health: http://127.0.0.1:$HEALTH_PORT/health)"
for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$HEALTH_PORT/ready" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$PIKACHU_PID" 2>/dev/null; then
        echo "pikachu exited:"; cat "$DIR/demo/pikachu.log"; exit 1
    fi
    sleep 0.1
done

echo "== making changes in pikachu_demo.users"
bash scripts/mariadb.sh shell pikachu_demo -e "
  INSERT INTO users (name, email) VALUES ('John Doe', 'john@example.com');
  UPDATE users SET name = 'Jane Doe' WHERE id = LAST_INSERT_ID();
  DELETE FROM users WHERE id = LAST_INSERT_ID();"

echo "== webhooks received:"
for _ in $(seq 1 300); do
    [[ $(grep -c '^POST ' "$RECEIVER_LOG" || true) -ge 3 ]] && break
    sleep 0.1
done
if [[ $(grep -c '^POST ' "$RECEIVER_LOG" || true) -lt 3 ]]; then
    echo "expected 3 webhooks; pikachu log:"; cat "$DIR/demo/pikachu.log"; exit 1
fi
curl -fsS "http://127.0.0.1:$HEALTH_PORT/health"; echo
if [[ $KEEP == 1 ]]; then
    echo "pikachu (pid $PIKACHU_PID) and the receiver (pid $RECEIVER_PID) keep running."
    echo "Make changes with: scripts/mariadb.sh shell pikachu_demo"
    trap - EXIT
fi

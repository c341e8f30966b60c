#!/usr/bin/env python3
"""pikachu's benchmark suite (run it with `scripts/bench.sh`).

On the local dev MariaDB (scripts/mariadb.sh, port 3407) it writes a
workload, then reads the same binlog range with several readers, in
interleaved rounds so that a noisy neighbour hurts them all alike:

  pikachu          `pikachu replay --output null`: decodes every row and
                   renders its webhook payload (JSON), then drops it
  raw-stream       the same client stack streaming the range, no decoding
                   (examples/bench_raw_stream.rs): the wire limit
  mariadb-binlog   `mariadb-binlog --read-from-remote-server -v`
  mysql_cdc        the `mysql_cdc` crate (bench/readers)
  mysql_async-rows mysql_async + mysql_common's row API (bench/readers)
  python-mysql-replication   from PyPI (scripts/bench_pyreplication.py)

Then delivery end to end (`pikachu replay --output webhook` of the bulk
range to examples/bench_receiver.rs, one change per POST and batched),
`pikachu run` delivery of the same range through the task lanes, the
spill and drain rates of a task's backlog (its endpoint down, then back),
commit-to-receiver latency at a steady rate (examples/bench_e2e_latency.rs),
and a 1,000,000-row transaction. Prints a table and rewrites the generated
part of docs/benchmarks.md (between the `bench:begin`/`bench:end` markers).

Every catch-up and delivery row runs on two cores (nothing pinned) and on
one core: the reader (or pikachu and its load generator) and the MariaDB
server pinned with `taskset` to the same single core (the receiver, when
there is one, on the other core, so that its CPU is not pikachu's). Every
row reports CPU seconds per 100,000 changes; delivery rows report CPU µs
per POST and per change for pikachu and, separately, the receiver's CPU.
`PIKACHU_BASELINE=/path/to/an/older/pikachu` adds a `pikachu-baseline` row
(and delivery rows) for that binary, interleaved in the same rounds: the
comparison with the previous main that a change on the hot path needs.
Single-POST delivery is compared with `wrk` POSTing the same body to the
same receiver with the same concurrency, in the same round.

Settings (environment): BENCH_ROWS (200000), BENCH_RUNS (5), BENCH_BIG_ROWS
(1000000; 0 skips), BENCH_PROFILES (bulk,oltp), BENCH_READERS (all),
BENCH_CORES (2,1), BENCH_SKIP (comma list of: delivery, run, backlog, latency, big, wrk, snapshot),
BENCH_SNAPSHOT_ROWS (1000000), BENCH_SNAPSHOT_CHUNK (snapshot.chunk_size; default:
pikachu's), BENCH_SNAPSHOT_LOG (a file for pikachu's log in the snapshot runs),
PIKACHU_BASELINE, BENCH_NO_DOCS=1.
"""

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = int(os.environ.get("PIKACHU_MARIADB_PORT", "3407"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
READERS_TARGET = os.environ.get(
    "BENCH_READERS_TARGET", os.path.join(REPO, "bench", "readers", "target")
)
ROWS = int(os.environ.get("BENCH_ROWS", "200000"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
CORES = [int(c) for c in os.environ.get("BENCH_CORES", "2,1").split(",") if c]
BASELINE = os.environ.get("PIKACHU_BASELINE") or None
BIG_ROWS = int(os.environ.get("BENCH_BIG_ROWS", "1000000"))
SNAP_ROWS = int(os.environ.get("BENCH_SNAPSHOT_ROWS", "1000000"))
PROFILES = os.environ.get("BENCH_PROFILES", "bulk,oltp").split(",")
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
DB = "pikachu_bench"
USER, PASSWORD = "pikachu", "pikachu"

PIKACHU = os.path.join(TARGET, "release", "pikachu")
RAW = os.path.join(TARGET, "release", "examples", "bench_raw_stream")
RECEIVER = os.path.join(TARGET, "release", "examples", "bench_receiver")
E2E = os.path.join(TARGET, "release", "examples", "bench_e2e_latency")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def root_sql(sql, database=None):
    cmd = ["bash", os.path.join(REPO, "scripts", "mariadb.sh"), "shell", "--batch", "-N"]
    if database:
        cmd.append(database)
    out = subprocess.run(cmd, input=sql, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: SQL failed: {out.stderr.strip()}\n{sql[:300]}")
    return out.stdout


def master_status():
    line = root_sql("SHOW MASTER STATUS").split("\n")[0].split("\t")
    return line[0], int(line[1])


def mariadb_pid():
    path = os.path.join(REPO, ".mariadb", "mysqld.pid")
    with open(path) as f:
        return int(f.read().strip())


def pin_server(cores):
    """Pins every thread of the dev MariaDB to core 0 (cores == 1) or lets
    it use all cores again."""
    cpus = "0" if cores == 1 else f"0-{os.cpu_count() - 1}"
    sh(["taskset", "-a", "-p", "-c", cpus, str(mariadb_pid())], stdout=subprocess.DEVNULL)


def pinned(cmd, cores, core=0):
    """`cmd` on core `core` when measuring on one core."""
    return ["taskset", "-c", str(core)] + cmd if cores == 1 else cmd


def proc_cpu(pid):
    """CPU seconds (user + system) a running process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- workload -------------------------------------------------------------

TABLE = """CREATE TABLE {name} (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  customer_id INT NOT NULL,
  sku VARCHAR(32) NOT NULL,
  email VARCHAR(128),
  quantity SMALLINT NOT NULL,
  price DECIMAL(12,2) NOT NULL,
  weight DOUBLE,
  status ENUM('new','paid','shipped','cancelled') NOT NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  ship_date DATE,
  note TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# Values derived from the sequence number: every column varies.
SELECT_ROWS = (
    "SELECT seq, seq % 9973, CONCAT('SKU-', seq % 1000), CONCAT('user', seq, '@example.com'), "
    "1 + seq % 20, (seq % 100000) / 100, seq * 0.37, "
    "ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), "
    "TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL (seq % 1000000) MICROSECOND, "
    "FROM_UNIXTIME(1767225600 + seq), DATE'2026-01-01' + INTERVAL (seq % 365) DAY, "
    "IF(seq % 5 = 0, NULL, REPEAT('note ', 1 + seq % 8)) FROM seq_{a}_to_{b}"
)


def insert(table, a, b):
    return f"INSERT INTO {table} {SELECT_ROWS.format(a=a, b=b)};"


def update(table, a, b):
    return (
        f"UPDATE {table} SET quantity = quantity + 1, status = 'paid', "
        f"weight = weight * 1.5, note = CONCAT('changed ', id) WHERE id BETWEEN {a} AND {b};"
    )


def delete(table, a, b):
    return f"DELETE FROM {table} WHERE id BETWEEN {a} AND {b};"


def workload_bulk(table, n, txn=5000):
    """Large multi-row transactions: 60% inserts, 25% updates, 15% deletes."""
    ins, upd = n * 60 // 100, n * 25 // 100
    dele = n - ins - upd
    sql = []
    for a in range(1, ins + 1, txn):
        sql.append(f"BEGIN; {insert(table, a, min(a + txn - 1, ins))} COMMIT;")
    for a in range(1, upd + 1, txn):
        sql.append(f"BEGIN; {update(table, a, min(a + txn - 1, upd))} COMMIT;")
    for a in range(ins - dele + 1, ins + 1, txn):
        sql.append(f"BEGIN; {delete(table, a, min(a + txn - 1, ins))} COMMIT;")
    return "\n".join(sql), n


def workload_oltp(table, n, seed=42):
    """Transactions of 1–10 rows: 60% inserts, 25% updates, 15% deletes."""
    rng = random.Random(seed)
    sql, done = [], 0
    next_id, oldest = 1, 1  # ids [oldest, next_id) exist
    while done < n:
        k = min(rng.randint(1, 10), n - done)
        r = rng.random()
        live = next_id - oldest
        if r < 0.60 or live < 2 * k + 10:
            stmt = insert(table, next_id, next_id + k - 1)
            next_id += k
        elif r < 0.85:
            a = rng.randint(oldest, next_id - k)
            stmt = update(table, a, a + k - 1)
        else:
            stmt = delete(table, oldest, oldest + k - 1)
            oldest += k
        sql.append(f"BEGIN; {stmt} COMMIT;")
        done += k
    return "\n".join(sql), done


def prepare(profile, n):
    """Writes the workload; returns (file, start, end, row changes)."""
    table = f"{DB}.{profile}"
    root_sql(f"DROP TABLE IF EXISTS {table}; " + TABLE.format(name=table) + ";")
    sql, rows = {"bulk": workload_bulk, "oltp": workload_oltp, "big": workload_big}[profile](
        table, n
    )
    root_sql("FLUSH BINARY LOGS")
    f1, start = master_status()
    t0 = time.monotonic()
    root_sql(sql, database=DB)  # the seq_A_to_B tables need a current database
    f2, end = master_status()
    if f1 != f2:
        raise SystemExit(f"bench: the {profile} workload crossed a binlog file ({f1} → {f2})")
    size = end - start
    log(f"  {profile}: {rows} row changes, {size / 1e6:.1f} MB of binlog, written in {time.monotonic() - t0:.1f} s")
    return {"profile": profile, "file": f1, "start": start, "end": end, "rows": rows, "bytes": size}


def workload_big(table, n):
    return f"BEGIN; {insert(table, 1, n)} COMMIT;", n


# --- running readers -----------------------------------------------------


def measure(cmd, env=None, stdout_file=None):
    """Runs cmd; returns (stdout text, wall s, cpu s, peak RSS KiB)."""
    t0 = time.monotonic()
    out = open(stdout_file, "wb") if stdout_file else subprocess.PIPE
    # stderr to a file: reading two pipes in turn could deadlock.
    err = tempfile.TemporaryFile()
    # GNU time reports the command's own peak RSS and CPU: a child forked
    # from this Python process would count Python's memory in its peak.
    fd, usage = tempfile.mkstemp()
    os.close(fd)
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", usage] + cmd,
                         stdout=out, stderr=err, env=env)
    stdout = p.stdout.read() if p.stdout else b""
    p.wait()
    wall = time.monotonic() - t0
    err.seek(0)
    stderr = err.read()
    err.close()
    with open(usage) as f:
        fields = f.read().split()
    os.unlink(usage)
    if stdout_file:
        out.close()
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {stderr.decode(errors='replace')[-800:]}")
    rss, user, system = int(fields[-3]), float(fields[-2]), float(fields[-1])
    return stdout.decode(errors="replace"), wall, user + system, rss


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in: {text[-300:]}")


def pikachu_config(dirpath, url="http://127.0.0.1:9/unused", batch=None, tables=("bulk", "oltp", "big")):
    cfg = os.path.join(dirpath, "config.yaml")
    tasks = ""
    for t in tables:
        tasks += (
            f'- task_id: "bench_{t}"\n  name: "{t}"\n  table_name: "{t}"\n'
            f'  events: ["insert", "update", "delete"]\n  callback_url: "{url}"\n'
            # Signed, as a production webhook would be (Standard Webhooks).
            f'  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
        )
        if batch:
            tasks += f"  batch:\n    max_events: {batch}\n    max_wait: \"10ms\"\n"
    with open(cfg, "w") as f:
        f.write(
            f'database:\n  host: "127.0.0.1"\n  port: {PORT}\n  user: "{USER}"\n  password: "{PASSWORD}"\n'
            f'  database: "{DB}"\n  server_id: 4711\n  tls: "disabled"\n'
            f'log:\n  level: "warn"\nstate_dir: "{dirpath}/state"\n'
            f"dispatcher:\n  worker_count: 16\n  queue_size: 10000\n"
            f"tasks:\n{tasks}"
        )
    return cfg


def run_reader(name, rng, tmp, cores=2):
    """One run of one reader over a range: a result dict."""
    file, start, end = rng["file"], rng["start"], rng["end"]
    common = ["--host", "127.0.0.1", "--port", str(PORT), "--user", USER, "--password", PASSWORD,
              "--server-id", str(5000 + random.randint(0, 999)), "--file", file,
              "--pos", str(start), "--end-pos", str(end)]
    rows = None
    if name in ("pikachu", "pikachu-baseline"):
        cfg = pikachu_config(tmp)
        binary = PIKACHU if name == "pikachu" else BASELINE
        out, wall, cpu, rss = measure(pinned([binary, "replay", "-config", cfg, "--from", f"{file}:{start}",
                                              "--to", f"{file}:{end}", "--output", "null"], cores))
        s = last_json(out)["summary"]
        rows = s["changes"]
    elif name == "raw-stream":
        out, wall, cpu, rss = measure(pinned([RAW] + common, cores))
        rows = rng["rows"]  # it decodes no rows; it reads all of the range's events
    elif name == "mariadb-binlog":
        dump = os.path.join(tmp, "mariadb-binlog.out")
        out, wall, cpu, rss = measure(pinned(
            ["mariadb-binlog", "--no-defaults", "--read-from-remote-server", "--host=127.0.0.1",
             f"--port={PORT}", f"--user={USER}", f"--password={PASSWORD}", "-v",
             f"--start-position={start}", f"--stop-position={end}", file], cores),
            stdout_file=dump)
        # -v writes one "### INSERT/UPDATE/DELETE" line per row change.
        rows = 0
        with open(dump, "rb") as f:
            for line in f:
                if line.startswith((b"### INSERT", b"### UPDATE", b"### DELETE")):
                    rows += 1
        os.unlink(dump)
    elif name in ("mysql_cdc", "mysql_async-rows"):
        binary = {"mysql_cdc": "mysql_cdc_reader", "mysql_async-rows": "mysql_async_rows"}[name]
        out, wall, cpu, rss = measure(pinned([os.path.join(READERS_TARGET, "release", binary)] + common, cores))
        rows = last_json(out)["rows"]
    elif name == "python-mysql-replication":
        out, wall, cpu, rss = measure(pinned([sys.executable, os.path.join(REPO, "scripts", "bench_pyreplication.py")] + common, cores))
        rows = last_json(out)["rows"]
    else:
        raise SystemExit(f"bench: unknown reader {name}")
    if rows != rng["rows"]:
        raise RuntimeError(f"{name} counted {rows} row changes in the {rng['profile']} range, expected {rng['rows']}")
    return {"wall": wall, "cpu": cpu, "rss_kib": rss}


ALL_READERS = ["pikachu", "pikachu-baseline", "raw-stream", "mariadb-binlog", "mysql_cdc",
               "mysql_async-rows", "python-mysql-replication"]


def catch_up(ranges, readers, tmp):
    """Interleaved rounds: every core setting, range and reader once per round."""
    results = {}  # (cores, profile, reader) -> [runs]
    for r in range(RUNS):
        for cores in CORES:
            pin_server(cores)
            try:
                for rng in ranges:
                    # Odd rounds reverse the order, so that no binary is
                    # always the one that runs first (right after the
                    # workload was written, the first run of a round was
                    # up to 20% slower).
                    for name in readers if r % 2 == 0 else readers[::-1]:
                        key = (cores, rng["profile"], name)
                        try:
                            res = run_reader(name, rng, tmp, cores)
                        except (RuntimeError, FileNotFoundError) as e:
                            log(f"  {cores}c {rng['profile']:5} {name:26} run {r + 1}: FAILED: {e}")
                            results.setdefault(key, [])
                            continue
                        results.setdefault(key, []).append(res)
                        log(f"  {cores}c {rng['profile']:5} {name:26} run {r + 1}: "
                            f"{rng['rows'] / res['wall']:>12,.0f} rows/s  {res['wall']:6.2f} s  "
                            f"CPU {res['cpu']:6.2f} s  {res['rss_kib'] / 1024:6.1f} MiB")
            finally:
                pin_server(2)
    return results


def med(runs, key):
    return statistics.median(x[key] for x in runs) if runs else None


# --- delivery --------------------------------------------------------------


def wrk_body(rng, tmp):
    """One payload of the range, as pikachu renders it (the body wrk POSTs)."""
    cfg = pikachu_config(tmp)
    out = subprocess.run([PIKACHU, "replay", "-config", cfg, "--from", f"{rng['file']}:{rng['start']}",
                          "--to", f"{rng['file']}:{rng['end']}", "--output", "stdout"],
                         capture_output=True, check=True).stdout
    first = out.split(b"\n", 1)[0]
    path = os.path.join(tmp, "wrk.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(first.decode())}\n")
    return path


def run_wrk(url, script, cores, seconds=10):
    """wrk with pikachu's concurrency (worker_count 16) on pikachu's core."""
    cmd = pinned(["wrk", "-t", "1" if cores == 1 else "2", "-c", "16", "-d", f"{seconds}s",
                  "-s", script, url], cores)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no rate: {out[-400:]}")
    return float(m.group(1))


def delivery_once(binary, rng, tmp, cores, batch):
    """One replay of `rng` to a fresh receiver on the other core."""
    recv = subprocess.Popen(pinned([RECEIVER], cores, core=1), stdout=subprocess.PIPE, text=True)
    try:
        url = recv.stdout.readline().strip()
        cfg = pikachu_config(tmp, url=url, batch=batch)
        shutil.rmtree(os.path.join(tmp, "state"), ignore_errors=True)
        o, wall, cpu, rss = measure(pinned([binary, "replay", "-config", cfg, "--from",
                                            f"{rng['file']}:{rng['start']}", "--to",
                                            f"{rng['file']}:{rng['end']}", "--output", "webhook"], cores))
        s = last_json(o)["summary"]
        stats = json.load(urllib.request.urlopen(url.replace("/hook", "/stats")))
        recv_cpu = proc_cpu(recv.pid)
    finally:
        recv.terminate()
        recv.wait()
    if stats["changes"] != rng["rows"] or s["failed"] != 0:
        raise SystemExit(f"bench: delivery lost changes: receiver {stats}, replay {s}")
    return {"wall": wall, "cpu": cpu, "rss_kib": rss, "requests": stats["requests"], "recv_cpu": recv_cpu}


def wrk_once(rng, tmp, cores, script):
    recv = subprocess.Popen(pinned([RECEIVER], cores, core=1), stdout=subprocess.PIPE, text=True)
    try:
        url = recv.stdout.readline().strip()
        rate = run_wrk(url, script, cores)
        recv_cpu = proc_cpu(recv.pid)
        stats = json.load(urllib.request.urlopen(url.replace("/hook", "/stats")))
    finally:
        recv.terminate()
        recv.wait()
    return {"rate": rate, "recv_cpu_per_req": recv_cpu / max(stats["requests"], 1)}


DELIVERY_MODES = (("one change per POST", None), ("batches of 100", 100))


def delivery(rng, tmp):
    """Interleaved rounds of: every core setting × (pikachu, baseline) ×
    mode, and wrk, each once per round."""
    out = {}  # (cores, binary name, mode) -> [runs]; (cores, "wrk") -> [runs]
    script = wrk_body(rng, tmp) if "wrk" not in SKIP and shutil.which("wrk") else None
    binaries = [("pikachu", PIKACHU)] + ([("pikachu-baseline", BASELINE)] if BASELINE else [])
    for r in range(RUNS):
        for cores in CORES:
            pin_server(cores)
            try:
                # Odd rounds reverse the order (see catch_up).
                for name, binary in binaries if r % 2 == 0 else binaries[::-1]:
                    for mode, batch in DELIVERY_MODES:
                        res = delivery_once(binary, rng, tmp, cores, batch)
                        out.setdefault((cores, name, mode), []).append(res)
                        log(f"  {cores}c delivery {name:16} {mode:20} run {r + 1}: "
                            f"{rng['rows'] / res['wall']:>10,.0f} changes/s  "
                            f"{res['cpu'] / res['requests'] * 1e6:7.1f} µs CPU/POST  "
                            f"receiver {res['recv_cpu']:.2f} s")
                if script:
                    res = wrk_once(rng, tmp, cores, script)
                    out.setdefault((cores, "wrk"), []).append(res)
                    log(f"  {cores}c wrk run {r + 1}: {res['rate']:>10,.0f} requests/s")
            finally:
                pin_server(2)
    return out


# --- `pikachu run`: live delivery through the task lanes, and a backlog --

def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(tmp, url, batch, rng):
    """A `pikachu run` config for the bulk table from the start of `rng`,
    saving its checkpoint every 10 ms (the backlog rows time the spill by
    it)."""
    cfg = pikachu_config(tmp, url=url, batch=batch, tables=("bulk",))
    with open(cfg, "a") as f:
        f.write(f'checkpoint:\n  interval: "10ms"\n'
                f'start:\n  file: "{rng["file"]}"\n  pos: {rng["start"]}\n')
    return cfg


def wait_for(what, f, timeout=600):
    """Polls `f` every 5 ms until it returns a true value; exits after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.005)


def received(url):
    return json.load(urllib.request.urlopen(url.replace("/hook", "/stats")))["changes"]


def start_run(binary, cfg, cores, tmp):
    log_path = os.path.join(tmp, "run.log")
    with open(log_path, "ab") as logf:
        return subprocess.Popen(pinned([binary, "run", "-config", cfg], cores),
                                stdout=subprocess.DEVNULL, stderr=logf)


def stop_run(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_once(binary, rng, tmp, cores, batch):
    """`pikachu run` from the start of `rng` until the receiver has every
    change of it: the live path (reader, fan-out, the task's lane and engine)."""
    recv = subprocess.Popen(pinned([RECEIVER], cores, core=1), stdout=subprocess.PIPE, text=True)
    try:
        url = recv.stdout.readline().strip()
        shutil.rmtree(os.path.join(tmp, "state"), ignore_errors=True)
        cfg = run_config(tmp, url, batch, rng)
        t0 = time.monotonic()
        p = start_run(binary, cfg, cores, tmp)
        try:
            wait_for("the run's deliveries", lambda: p.poll() is not None or received(url) >= rng["rows"])
            wall = time.monotonic() - t0
            cpu = proc_cpu(p.pid) if p.poll() is None else 0.0
        finally:
            stop_run(p)
        n = received(url)
    finally:
        recv.terminate()
        recv.wait()
    if n < rng["rows"]:
        raise SystemExit(f"bench: `pikachu run` delivered {n} of {rng['rows']} (see {tmp}/run.log)")
    return {"wall": wall, "cpu": cpu}


def checkpoint_at(tmp):
    import sqlite3
    try:
        with sqlite3.connect(os.path.join(tmp, "state", "pikachu.db"), timeout=1) as c:
            return c.execute("SELECT file, pos FROM checkpoint").fetchone()
    except sqlite3.Error:
        return None


def backlog_once(rng, tmp, cores):
    """Spill: `pikachu run` from the start of `rng` with the endpoint down,
    until the checkpoint passes the end of `rng` (every change is durably in
    the task's backlog: a spilling lane copies its engine's jobs there too). Drain: a
    restart with the endpoint up, until the receiver has every change."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    shutil.rmtree(os.path.join(tmp, "state"), ignore_errors=True)
    cfg = run_config(tmp, url, None, rng)
    end = (rng["file"], rng["end"])
    t0 = time.monotonic()
    p = start_run(PIKACHU, cfg, cores, tmp)
    try:
        wait_for("the spill", lambda: p.poll() is not None or ((c := checkpoint_at(tmp)) and tuple(c) >= end))
        spill = time.monotonic() - t0
    finally:
        stop_run(p)
    if not ((c := checkpoint_at(tmp)) and tuple(c) >= end):
        raise SystemExit(f"bench: the spill did not reach the end of the range (see {tmp}/run.log)")
    recv = subprocess.Popen(pinned([RECEIVER, str(port)], cores, core=1), stdout=subprocess.PIPE, text=True)
    try:
        recv.stdout.readline()
        t0 = time.monotonic()
        p = start_run(PIKACHU, cfg, cores, tmp)
        try:
            wait_for("the drain", lambda: p.poll() is not None or received(url) >= rng["rows"])
            drain = time.monotonic() - t0
        finally:
            stop_run(p)
        n = received(url)
    finally:
        recv.terminate()
        recv.wait()
    if n < rng["rows"]:
        raise SystemExit(f"bench: the drain delivered {n} of {rng['rows']} (see {tmp}/run.log)")
    return {"spill": spill, "drain": drain}


def live(rng, tmp):
    """Interleaved rounds of `pikachu run` delivery (pikachu, baseline) ×
    mode, and one backlog spill and drain, on two cores."""
    out = {}
    binaries = [("pikachu", PIKACHU)] + ([("pikachu-baseline", BASELINE)] if BASELINE else [])
    for r in range(RUNS):
        for name, binary in binaries if r % 2 == 0 else binaries[::-1]:
            for mode, batch in DELIVERY_MODES:
                res = run_once(binary, rng, tmp, 2, batch)
                out.setdefault((name, mode), []).append(res)
                log(f"  run delivery {name:16} {mode:20} run {r + 1}: {rng['rows'] / res['wall']:>10,.0f} changes/s")
        if "backlog" not in SKIP:
            res = backlog_once(rng, tmp, 2)
            out.setdefault("backlog", []).append(res)
            log(f"  backlog run {r + 1}: spill {rng['rows'] / res['spill']:>10,.0f} changes/s, "
                f"drain {rng['rows'] / res['drain']:>10,.0f} changes/s")
    return out


def snapshot_fill(n):
    table = f"{DB}.snap"
    root_sql(f"DROP TABLE IF EXISTS {table}; " + TABLE.format(name=table) + ";")
    step = 100_000
    for a in range(1, n + 1, step):
        root_sql(insert(table, a, min(a + step - 1, n)), database=DB)
    root_sql(f"ANALYZE TABLE {table}")


def raw_read_once():
    """`mariadb --quick -e "SELECT * FROM snap" > /dev/null`: wall s."""
    _, wall, cpu, rss = measure(["mariadb", "--quick", "-h", "127.0.0.1", "-P", str(PORT), "-u", USER,
                                 f"-p{PASSWORD}", DB, "-e", "SELECT * FROM snap"], stdout_file="/dev/null")
    return {"wall": wall, "cpu": cpu, "rss_kib": rss}


def snapshot_once(binary, tmp, n):
    """`pikachu run` with `snapshot: initial` on `snap`, batches of 500 to a
    local receiver: wall s from the start to the last row received, CPU,
    peak RSS."""
    recv = subprocess.Popen([RECEIVER], stdout=subprocess.PIPE, text=True)
    fd, usage = tempfile.mkstemp()
    os.close(fd)
    proc = None
    try:
        url = recv.stdout.readline().strip()
        shutil.rmtree(os.path.join(tmp, "state"), ignore_errors=True)
        cfg = pikachu_config(tmp, url=url, batch=500, tables=("snap",))
        with open(cfg) as f:
            text = f.read()
        text = text.replace('  batch:\n', '  snapshot: initial\n  batch:\n')
        if os.environ.get("BENCH_SNAPSHOT_CHUNK"):
            text += f"snapshot:\n  chunk_size: {int(os.environ['BENCH_SNAPSHOT_CHUNK'])}\n"
        with open(cfg, "w") as f:
            f.write(text)
        t0 = time.monotonic()
        # BENCH_SNAPSHOT_LOG=FILE keeps pikachu's log (with RUST_LOG=pikachu=debug: per-chunk timings).
        log_path = os.environ.get("BENCH_SNAPSHOT_LOG")
        err = open(log_path, "a") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", usage, binary, "-config", cfg],
                                stdout=subprocess.DEVNULL, stderr=err)
        stats_url = url.replace("/hook", "/stats")
        while True:
            stats = json.load(urllib.request.urlopen(stats_url))
            if stats["changes"] >= n:
                break
            if proc.poll() is not None:
                raise SystemExit("bench: pikachu stopped during the snapshot")
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"bench: the snapshot did not finish in 600 s ({stats})")
            time.sleep(0.05)
        wall = time.monotonic() - t0
        child = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in child:
            os.kill(int(pid), signal.SIGTERM)
        proc.wait(timeout=60)
        with open(usage) as f:
            fields = f.read().split()
        rss, user, system = int(fields[-3]), float(fields[-2]), float(fields[-1])
        return {"wall": wall, "cpu": user + system, "rss_kib": rss, "requests": stats["requests"]}
    finally:
        if proc and proc.poll() is None:
            proc.kill()
        recv.terminate()
        recv.wait()
        os.unlink(usage)


def snapshot_bench(tmp):
    """Interleaved rounds of the raw read and pikachu's snapshot (and the baseline's, if it has one)."""
    log(f"  filling snap with {SNAP_ROWS:,} rows…")
    snapshot_fill(SNAP_ROWS)
    out = {}
    for r in range(RUNS):
        res = raw_read_once()
        out.setdefault("raw", []).append(res)
        log(f"  raw read run {r + 1}: {SNAP_ROWS / res['wall']:>10,.0f} rows/s")
        res = snapshot_once(PIKACHU, tmp, SNAP_ROWS)
        out.setdefault("pikachu", []).append(res)
        log(f"  snapshot run {r + 1}: {SNAP_ROWS / res['wall']:>10,.0f} rows/s, "
            f"peak RSS {res['rss_kib'] / 1024:.1f} MiB")
    root_sql(f"DROP TABLE {DB}.snap")
    return out


def latency():
    env = dict(os.environ, PIKACHU_BIN=PIKACHU, PIKACHU_MARIADB_PORT=str(PORT),
               BENCH_RATE=os.environ.get("BENCH_RATE", "1000"),
               BENCH_SECONDS=os.environ.get("BENCH_SECONDS", "10"))
    runs = []
    for r in range(RUNS):
        out, *_ = measure([E2E], env=env)
        j = last_json(out)
        runs.append(j)
        log(f"  latency run {r + 1}: {j['received']}/{j['sent']} at {j['rate']:.0f}/s  "
            f"p50 {j['p50_ms']:.2f} ms  p99 {j['p99_ms']:.2f} ms  max {j['max_ms']:.1f} ms")
    return runs


# --- report ----------------------------------------------------------------


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ver = subprocess.run([PIKACHU, "--version"], capture_output=True, text=True).stdout.strip()
    mdb = root_sql("SELECT VERSION()").strip()
    return f"{os.cpu_count()} CPUs ({cpu}), MariaDB {mdb}, {ver}"


def core_label(cores):
    return "one core (reader and MariaDB pinned to the same core)" if cores == 1 else "two cores"


def report(ranges, results, deliv, lat, big, snap=None, run=None, deliv_range=None):
    lines = []
    w = lines.append
    w(f"Generated by `scripts/bench.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
      f"{machine()}. Medians of {RUNS} interleaved runs."
      + (f" `pikachu-baseline` is {baseline_version()}." if BASELINE else ""))
    w("")
    for cores in CORES:
        for rng in ranges:
            p = rng["profile"]
            w(f"### Catch-up read, {p} profile, {core_label(cores)}: {rng['rows']:,} row changes, "
              f"{rng['bytes'] / 1e6:.1f} MB of binlog")
            w("")
            w("| reader | rows/s | wall s | CPU s | CPU s per 100k | peak RSS MiB | pikachu rows/s ÷ reader's |")
            w("|---|---:|---:|---:|---:|---:|---:|")
            pk = med(results.get((cores, p, "pikachu"), []), "wall")
            for name in ALL_READERS:
                runs = results.get((cores, p, name))
                if runs is None:
                    continue
                if not runs:
                    w(f"| {name} | failed | | | | | |")
                    continue
                wall, cpu = med(runs, "wall"), med(runs, "cpu")
                ratio = f"{wall / pk:.2f}×" if pk and name != "pikachu" else ""
                w(f"| {name} | {rng['rows'] / wall:,.0f} | {wall:.2f} | {cpu:.2f} | "
                  f"{cpu / rng['rows'] * 1e5:.3f} | {med(runs, 'rss_kib') / 1024:.1f} | {ratio} |")
            w("")
    if deliv:
        rng = deliv["range"]
        modes = deliv["modes"]
        for cores in CORES:
            w(f"### Delivery end to end, {core_label(cores).replace('reader', 'pikachu')}: the bulk range "
              f"({rng['rows']:,} changes) replayed to a local receiver"
              + (" (receiver on the other core)" if cores == 1 else ""))
            w("")
            w("| binary | mode | changes/s | wall s | requests | pikachu CPU s | CPU µs per POST | "
              "CPU µs per change | receiver CPU s | peak RSS MiB |")
            w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name in ("pikachu", "pikachu-baseline"):
                for mode, _ in DELIVERY_MODES:
                    runs = modes.get((cores, name, mode))
                    if not runs:
                        continue
                    wall, cpu = med(runs, "wall"), med(runs, "cpu")
                    req = runs[0]["requests"]
                    w(f"| {name} | {mode} | {rng['rows'] / wall:,.0f} | {wall:.2f} | {req:,} | {cpu:.2f} | "
                      f"{cpu / req * 1e6:.1f} | {cpu / rng['rows'] * 1e6:.2f} | {med(runs, 'recv_cpu'):.2f} | "
                      f"{med(runs, 'rss_kib') / 1024:.1f} |")
            wrk = modes.get((cores, "wrk"))
            single = modes.get((cores, "pikachu", DELIVERY_MODES[0][0]))
            if wrk and single:
                rate = statistics.median(x["rate"] for x in wrk)
                ours = rng["rows"] / med(single, "wall")
                w(f"| wrk (same body, 16 connections) | one request per POST | {rate:,.0f} | | | | | | "
                  f"{statistics.median(x['recv_cpu_per_req'] for x in wrk) * 1e6:.1f} µs per request | |")
                w("")
                w(f"Single-POST delivery: **{ours / rate * 100:.0f}%** of wrk's request rate.")
            w("")
    if run:
        rng = deliv_range
        w(f"### `pikachu run` delivery, two cores: the bulk range ({rng['rows']:,} changes) from a start "
          "position to a local receiver, through the task's lane (wall from the process start)")
        w("")
        w("| binary | mode | changes/s | wall s | pikachu CPU s | ÷ baseline |")
        w("|---|---|---:|---:|---:|---:|")
        for mode, _ in DELIVERY_MODES:
            base = run.get(("pikachu-baseline", mode))
            for name in ("pikachu", "pikachu-baseline"):
                runs = run.get((name, mode))
                if not runs:
                    continue
                wall = med(runs, "wall")
                ratio = f"{med(base, 'wall') / wall:.2f}×" if base and name == "pikachu" else ""
                w(f"| {name} | {mode} | {rng['rows'] / wall:,.0f} | {wall:.2f} | {med(runs, 'cpu'):.2f} | {ratio} |")
        w("")
        if run.get("backlog"):
            b = run["backlog"]
            w(f"Backlog of one task (endpoint down, then back; one change per POST): spilled "
              f"**{rng['rows'] / med(b, 'spill'):,.0f} changes/s** (wall from the process start until "
              f"the checkpoint passes the range), drained **{rng['rows'] / med(b, 'drain'):,.0f} changes/s** "
              f"(from the restart until the receiver has every change).")
            w("")
    if lat:
        w("### Commit-to-receiver latency, one change per POST")
        w("")
        w("| run | rate/s | received | p50 ms | p99 ms | max ms |")
        w("|---|---:|---:|---:|---:|---:|")
        for i, j in enumerate(lat):
            w(f"| {i + 1} | {j['rate']:.0f} | {j['received']}/{j['sent']} | {j['p50_ms']:.2f} | "
              f"{j['p99_ms']:.2f} | {j['max_ms']:.1f} |")
        w(f"| **median** | | | **{statistics.median(j['p50_ms'] for j in lat):.2f}** | "
          f"**{statistics.median(j['p99_ms'] for j in lat):.2f}** | |")
        w("")
    if snap:
        raw, ours = snap["raw"], snap["pikachu"]
        w(f"### Snapshot: {SNAP_ROWS:,} rows of the mixed-type table, `snapshot: initial`, "
          "batches of 500 to a local receiver, against the raw read of the same table")
        w("")
        w("| reader | rows/s | wall s | CPU s | peak RSS MiB |")
        w("|---|---:|---:|---:|---:|")
        w(f"| `mariadb --quick -e \"SELECT * FROM snap\" > /dev/null` | {SNAP_ROWS / med(raw, 'wall'):,.0f} | "
          f"{med(raw, 'wall'):.2f} | {med(raw, 'cpu'):.2f} | {med(raw, 'rss_kib') / 1024:.1f} |")
        w(f"| pikachu snapshot, delivered | {SNAP_ROWS / med(ours, 'wall'):,.0f} | {med(ours, 'wall'):.2f} | "
          f"{med(ours, 'cpu'):.2f} | {med(ours, 'rss_kib') / 1024:.1f} |")
        w("")
        w(f"Snapshot: **{med(raw, 'wall') / med(ours, 'wall') * 100:.0f}%** of the raw read's rate "
          f"(pikachu's wall includes delivery and its start), peak RSS {med(ours, 'rss_kib') / 1024:.1f} MiB.")
        w("")
    if big:
        w(f"### One transaction of {big['rows']:,} rows ({big['bytes'] / 1e6:.0f} MB of binlog), `replay --output null`")
        w("")
        w(f"wall {big['wall']:.2f} s ({big['rows'] / big['wall']:,.0f} rows/s), CPU {big['cpu']:.2f} s, "
          f"peak RSS **{big['rss_kib'] / 1024:.1f} MiB**")
        w("")
    return "\n".join(lines)


def baseline_version():
    return subprocess.run([BASELINE, "--version"], capture_output=True, text=True).stdout.strip()


def write_docs(text):
    path = os.path.join(REPO, "docs", "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc += "\n## Latest run of scripts/bench.sh\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)
    log(f"wrote {path}")


def main():
    readers = os.environ.get("BENCH_READERS", ",".join(ALL_READERS)).split(",")
    if not BASELINE:
        readers = [r for r in readers if r != "pikachu-baseline"]
    tmp = tempfile.mkdtemp(prefix="pikachu-bench-")
    try:
        root_sql("SET GLOBAL innodb_flush_log_at_trx_commit = 2; SET GLOBAL sync_binlog = 0; "
                 "SET GLOBAL max_binlog_size = 1073741824; "
                 f"CREATE DATABASE IF NOT EXISTS {DB}; "
                 "CREATE USER IF NOT EXISTS 'bench'@'%' IDENTIFIED BY 'bench'; "
                 "GRANT ALL ON pikachu_demo.* TO 'bench'@'%';")
        log(f"workloads ({ROWS:,} row changes each):")
        ranges = [prepare(p, ROWS) for p in PROFILES if p]
        log("catch-up read:")
        results = catch_up(ranges, readers, tmp)
        deliv = None
        bulk = next((r for r in ranges if r["profile"] == "bulk"), None)
        if "delivery" not in SKIP and bulk:
            log("delivery:")
            deliv = {"range": bulk, "modes": delivery(bulk, tmp)}
        run = None
        if "run" not in SKIP and bulk:
            log("`pikachu run` delivery and a backlog:")
            run = live(bulk, tmp)
        lat = None
        if "latency" not in SKIP:
            log("latency:")
            lat = latency()
        big = None
        if "big" not in SKIP and BIG_ROWS > 0:
            log("one big transaction:")
            rng = prepare("big", BIG_ROWS)
            res = run_reader("pikachu", rng, tmp)
            big = dict(rng, **res)
            log(f"  big: {BIG_ROWS / res['wall']:,.0f} rows/s, peak RSS {res['rss_kib'] / 1024:.1f} MiB")
            root_sql(f"DROP TABLE {DB}.big")
        snap = None
        if "snapshot" not in SKIP and SNAP_ROWS > 0:
            log("snapshot:")
            snap = snapshot_bench(tmp)
        text = report(ranges, results, deliv, lat, big, snap, run, bulk)
        print(text)
        if os.environ.get("BENCH_NO_DOCS") != "1":
            write_docs(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

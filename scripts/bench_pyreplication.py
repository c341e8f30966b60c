#!/usr/bin/env python3
"""Comparison reader for pikachu's benchmark: python-mysql-replication.

Reads a --file/--pos .. --end-pos range of a live server's binlog as a replica
(COM_BINLOG_DUMP, non-blocking) with the PyPI package `mysql-replication`,
decodes every row of every WRITE/UPDATE/DELETE rows event (`event.rows`
decodes; every value is then read), and prints one JSON line:

  {"reader":"python-mysql-replication","version":..,"rows":..,"events":..,"seconds":..}

rows counts row changes (an update's before+after pair counts as one).

  pip install mysql-replication
  python3 scripts/bench_pyreplication.py --host 127.0.0.1 --port 3407 \
      --user pikachu --password pikachu --server-id 1001 \
      --file mysql-bin.000003 --pos 4 --end-pos 123456

MariaDB: do NOT pass is_mariadb=True here. In this package that flag switches
the dump to MariaDB GTID mode, which ignores log_file/log_pos and starts from
position 4 of the first binlog. The plain file:pos COM_BINLOG_DUMP works on
MariaDB as is (the package sets @mariadb_slave_capability=4 itself). Column
names come from the table map's optional metadata (binlog_row_metadata=FULL).
"""

import argparse
import json
import sys
import time
from importlib.metadata import version as package_version


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--server-id", type=int, required=True)
    p.add_argument("--file", required=True, help="binlog file, e.g. mysql-bin.000003")
    p.add_argument("--pos", type=int, required=True, help="start position in --file")
    p.add_argument("--end-pos", type=int, required=True, help="stop once this position is reached")
    a = p.parse_args()
    if a.server_id <= 0:
        p.error("--server-id must be positive")
    if a.pos < 4:
        p.error("--pos must be at least 4")
    if a.end_pos < a.pos:
        p.error(f"--end-pos {a.end_pos} is before --pos {a.pos}")
    return a


def touch(value):
    """Reads a decoded value (so the decoding is really consumed)."""
    if value is None:
        return 1
    if isinstance(value, (int, float)):
        return 2
    if isinstance(value, (str, bytes, bytearray)):
        return 3 + len(value)
    # Decimal, datetime, date, timedelta, set, dict (JSON) ...
    return 4 + len(str(value))


def main():
    args = parse_args()
    try:
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.row_event import (
            DeleteRowsEvent,
            UpdateRowsEvent,
            WriteRowsEvent,
        )
    except ImportError as e:
        sys.exit(f"python-mysql-replication: {e} (pip install mysql-replication)")
    pkg_version = package_version("mysql-replication")

    rows = 0
    events = 0
    checksum = 0
    start = time.perf_counter()
    if args.pos < args.end_pos:
        stream = BinLogStreamReader(
            connection_settings={
                "host": args.host,
                "port": args.port,
                "user": args.user,
                "passwd": args.password,
            },
            server_id=args.server_id,
            log_file=args.file,
            log_pos=args.pos,
            resume_stream=True,
            blocking=False,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
            # The package's own stop: no event past end_pos is returned (the
            # events after our last rows event would otherwise be read too).
            end_log_pos=args.end_pos,
        )
        try:
            for event in stream:
                events += 1
                for row in event.rows:
                    rows += 1
                    if "values" in row:
                        for v in row["values"].values():
                            checksum += touch(v)
                    else:
                        for v in row["before_values"].values():
                            checksum += touch(v)
                        for v in row["after_values"].values():
                            checksum += touch(v)
                if stream.log_pos is not None and stream.log_pos >= args.end_pos:
                    break
        finally:
            stream.close()
        if stream.log_pos is None or stream.log_pos < args.end_pos:
            sys.exit(
                f"python-mysql-replication: the stream ended at {stream.log_file}:{stream.log_pos} "
                f"before --end-pos {args.end_pos}"
            )
    seconds = time.perf_counter() - start
    print(f"python-mysql-replication: value checksum {checksum}", file=sys.stderr)
    print(
        json.dumps(
            {
                "reader": "python-mysql-replication",
                "version": pkg_version,
                "rows": rows,
                "events": events,
                "seconds": round(seconds, 6),
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # a clear one-line message, non-zero exit
        sys.exit(f"python-mysql-replication: error: {type(e).__name__}: {e}")

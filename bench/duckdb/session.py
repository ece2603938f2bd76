"""DuckDB's side of bench-sql: one long-lived connection over the catalog tables exported to
Parquet (a view per table), answering one query per input line with its rows and the time it
took, measured here so that the pipe between the processes is not counted.

Usage: $VENV/bin/python session.py PARQUET_DIR   (reads JSON strings, writes JSON objects, one
per line; the venv is scripts/python-env.sh's)
"""
import json
import pathlib
import sys
import time

import duckdb

con = duckdb.connect()
for table in sorted(pathlib.Path(sys.argv[1]).glob("*.parquet")):
    con.execute(f"CREATE VIEW {table.stem} AS SELECT * FROM read_parquet('{table}')")
print(json.dumps({"duckdb": duckdb.__version__}), flush=True)
for line in sys.stdin:
    sql = json.loads(line)
    started = time.perf_counter()
    rows = con.execute(sql).fetchall()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": [[str(c) for c in r] for r in rows]}), flush=True)

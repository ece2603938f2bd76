"""The clients' side of bench-flight: Python ADBC over Flight SQL (adbc-driver-flightsql), and
DuckDB over the Parquet export of `files`, driven by bench/src/flight.rs one command per input
line (JSON), one JSON answer per output line.

Each Flight client is a process of its own (multiprocessing, spawned, not forked: the ADBC
driver is Go and starts threads), started once with one connection that it reuses for every
statement, as an application would. A statement's time is
`cursor.execute(sql)` (GetFlightInfo; CreatePreparedStatement first when the text is new
to the cursor) plus `cursor.fetch_arrow_table()` (DoGet, the whole
answer as one Arrow table), measured in the client with `time.perf_counter`.

Usage: $VENV/bin/python client.py URI USER PASSWORD FILES_PARQUET CLIENTS
Commands:
  {"op": "points", "questions": [SQL, ...], "runs": R, "clients": K, "shared_cursor": B}
      K clients at once (the first K), each asking every question R times in turn
      -> {"times": [[seconds, ...] per question, all clients'], "rows": [[[cell, ...], ...]
          per question], "wall": seconds}
  {"op": "scan", "sql": SQL}        one client -> {"seconds": s, "rows": n}
  {"op": "duckdb", "sql": SQL}      DuckDB, `files` a view over the Parquet file
      -> {"seconds": s, "rows": n}
"""
import json
import multiprocessing
import sys
import time


def worker(uri, user, password, pipe):
    import adbc_driver_flightsql.dbapi as flightsql

    conn = flightsql.connect(uri, db_kwargs={"username": user, "password": password}, autocommit=True)
    # One cursor per question, as an application keeps a statement per question it asks
    # again: ADBC's cursor prepares a statement (CreatePreparedStatement) whenever its text
    # differs from the one it ran last, and closes the one before (ClosePreparedStatement);
    # a cursor asked the same text again runs its prepared statement (GetFlightInfo, DoGet).
    # {"shared_cursor": true} asks every question on one cursor instead.
    cur = conn.cursor()
    cursors = {}
    pipe.send("ready")
    while True:
        cmd = pipe.recv()
        if cmd is None:
            break
        if cmd["op"] == "points":
            questions, runs = cmd["questions"], cmd["runs"]
            if cmd.get("shared_cursor"):
                curs = [cur for _ in questions]
            else:
                for sql in questions:
                    if sql not in cursors:
                        cursors[sql] = conn.cursor()
                curs = [cursors[sql] for sql in questions]
            # The answers, once each (untimed), to check them against imagelake in-process.
            rows = []
            for sql, c in zip(questions, curs):
                c.execute(sql)
                t = c.fetch_arrow_table()
                rows.append([[str(v) for v in r.values()] for r in t.to_pylist()])
            pipe.send("warm")
            pipe.recv()  # go
            times = [[] for _ in questions]
            for _ in range(runs):
                for i, (sql, c) in enumerate(zip(questions, curs)):
                    started = time.perf_counter()
                    c.execute(sql)
                    c.fetch_arrow_table()
                    times[i].append(time.perf_counter() - started)
            pipe.send({"times": times, "rows": rows})
        elif cmd["op"] == "scan":
            started = time.perf_counter()
            cur.execute(cmd["sql"])
            t = cur.fetch_arrow_table()
            pipe.send({"seconds": time.perf_counter() - started, "rows": t.num_rows})
    for c in [cur, *cursors.values()]:
        c.close()
    conn.close()


def main():
    uri, user, password, parquet, clients = sys.argv[1:6]
    import adbc_driver_flightsql
    import duckdb

    ctx = multiprocessing.get_context("spawn")
    pipes = []
    procs = []
    for _ in range(int(clients)):
        ours, theirs = ctx.Pipe()
        p = ctx.Process(target=worker, args=(uri, user, password, theirs), daemon=True)
        p.start()
        pipes.append(ours)
        procs.append(p)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    con = duckdb.connect()
    con.execute(f"CREATE VIEW files AS SELECT * FROM read_parquet('{parquet}')")
    versions = {"adbc_driver_flightsql": adbc_driver_flightsql.__version__, "duckdb": duckdb.__version__}
    print(json.dumps(versions), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "points":
            chosen = pipes[: cmd["clients"]]
            for pipe in chosen:
                pipe.send(cmd)
            for pipe in chosen:
                assert pipe.recv() == "warm"
            started = time.perf_counter()
            for pipe in chosen:
                pipe.send("go")
            answers = [pipe.recv() for pipe in chosen]
            wall = time.perf_counter() - started
            times = [sum((a["times"][i] for a in answers), []) for i in range(len(cmd["questions"]))]
            out = {"times": times, "rows": answers[0]["rows"], "wall": wall}
        elif cmd["op"] == "scan":
            pipes[0].send(cmd)
            out = pipes[0].recv()
        elif cmd["op"] == "duckdb":
            started = time.perf_counter()
            # DuckDB 2 names fetch_arrow_table to_arrow_table.
            t = con.execute(cmd["sql"]).to_arrow_table()
            out = {"seconds": time.perf_counter() - started, "rows": t.num_rows}
        else:
            raise SystemExit(f"unknown command {cmd!r}")
        print(json.dumps(out), flush=True)
    for pipe in pipes:
        pipe.send(None)
    for p in procs:
        p.join(10)


if __name__ == "__main__":
    main()

"""Flight SQL as a client uses it: queries, prepared statements, metadata, a million rows in
bounded server memory, eight clients at once, cancellation, and commands that run once.

The library (tests/tests/flight.rs): web@1, web@2, webapp@1, db@1, bulk@1 and its clones
bulk2..bulk10 (100,102 files each); users admin (admin on *), reader (read on web*), writer
(write on web*), dbreader (read on db), revokee, nogrants.
"""

import concurrent.futures
import threading
import time

import adbc_driver_manager as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import helpers
from helpers import DATA_ROOT, connect, cpu_seconds, fails, field, login, rows, scalar, statement, table

NAMES = sorted([("bulk", 1)] + [(f"bulk{i}", 1) for i in range(2, 11)] + [("db", 1), ("web", 1), ("web", 2), ("webapp", 1)])


def test_queries(admin):
    got = rows(admin, "SELECT name, version FROM images ORDER BY name, version")
    assert [r for r in got if r in NAMES] == NAMES, got
    packages = rows(admin, """
        SELECT p.name, p.version FROM packages p JOIN images i USING (image_id)
        WHERE i.name = 'web' AND i.version = 2 ORDER BY 1""")
    assert packages == [("curl", "7.88.1-10"), ("libc6", "2.36-9"), ("nginx", "1.22.1-9+deb12u1"), ("openssl", "3.0.11-1~deb12u1")]
    assert scalar(admin, "SELECT read_text('web@2', '/etc/motd')") == "welcome to web, version 2\n"
    assert scalar(admin, "SELECT read_bytes('web@1', '/etc/hostname')") == b"web\n"
    assert scalar(admin, "SELECT read_text('web@2', '/srv/www/old.html')") is None
    lines = rows(admin, "SELECT * FROM file_lines('web@1', '/etc/nginx/nginx.conf')")
    assert len(lines) == 41 and "worker_processes auto;" in lines[-1]
    changes = table(admin, "SELECT * FROM compare('web@1', 'web@2')").to_pylist()
    text = repr(changes)
    for expected in ("/srv/www/about.html", "/srv/www/old.html", "/etc/motd", "nginx", "curl"):
        assert expected in text, f"{expected} missing from compare: {text}"
    names = {r["name"] for r in table(admin, "SELECT * FROM ls('webapp@1', '/etc')").to_pylist()}
    assert {"app", "hostname", "motd", "os-release"} <= names
    # pandas, as a notebook reads it.
    with admin.cursor() as cur:
        df = cur.execute("SELECT name, count(*) AS n FROM images GROUP BY name ORDER BY name").fetch_df()
    assert df.set_index("name").loc["web", "n"] == 2


def test_schemas_as_advertised(admin):
    """Every stream's schema is the one its FlightInfo gave, for empty answers and aggregates
    too, and the endpoints name no location (the client reuses its connection)."""
    client, options, _ = login("admin")
    for sql in [
        "SELECT * FROM images",
        "SELECT * FROM files WHERE false",
        "SELECT count(*), sum(size), max(path) FROM files WHERE image_id < 0",
        "SELECT * FROM packages ORDER BY name LIMIT 0",
        "SELECT name, count(*) AS n FROM images GROUP BY name",
        "SELECT * FROM compare('web@1', 'web@2')",
        "SELECT * FROM image_stats('web@1')",
        "SELECT arrow_cast('x', 'Dictionary(Int32, Utf8)') AS d, CAST(NULL AS BIGINT) AS n",
    ]:
        info = client.get_flight_info(statement(sql), options)
        assert info.endpoints, sql
        for endpoint in info.endpoints:
            assert list(endpoint.locations) == [], f"{sql}: endpoint names {endpoint.locations}"
            reader = client.do_get(endpoint.ticket, options)
            got = reader.read_all()
            assert got.schema.equals(info.schema, check_metadata=False), f"{sql}:\n{info.schema}\nvs\n{got.schema}"
        # And ADBC, which rejects a stream whose schema differs, reads it.
        assert table(admin, sql).schema.equals(info.schema, check_metadata=False), sql


def test_prepared_statements(admin):
    with admin.cursor() as cur:
        sql = "SELECT name, version FROM images WHERE name = ? ORDER BY version"
        cur.execute(sql, ("web",))
        assert cur.fetchall() == [("web", 1), ("web", 2)]
        cur.execute(sql, ("webapp",))  # the same statement, bound again
        assert cur.fetchall() == [("webapp", 1)]
        cur.execute(sql, (None,))
        assert cur.fetchall() == []
        cur.execute(sql, ("web",))
        assert cur.fetchall() == [("web", 1), ("web", 2)]

        web1 = scalar(admin, "SELECT image_id FROM images WHERE name = 'web' AND version = 1")
        expected = scalar(admin, f"SELECT count(*) FROM files WHERE image_id = {web1} AND size >= 10")
        cur.execute("SELECT count(*) FROM files WHERE image_id = ? AND size >= ?", (web1, 10))
        assert cur.fetchall() == [(expected,)]
        cur.execute("SELECT ? IS NULL, coalesce(?, 'none')", (None, None))
        assert cur.fetchall() == [(True, "none")]
        cur.execute("SELECT read_text(?, ?)", ("web@2", "/etc/motd"))
        assert cur.fetchall() == [("welcome to web, version 2\n",)]
        # Named by position from an Arrow batch, too.
        cur.execute("SELECT ? + 1 AS x", pa.record_batch([pa.array([41], pa.int64())], names=["0"]))
        assert cur.fetchall() == [(42,)]

        # executemany: one run per row, here a command each (version 1 of two new images).
        before = scalar(admin, "SELECT count(*) FROM images")
        cur.executemany("SELECT clone(?, ?)", [("db@1", "many1"), ("db@1", "many2")])
        assert rows(admin, "SELECT name, version FROM images WHERE name LIKE 'many%' ORDER BY 1") == [("many1", 1), ("many2", 1)]
        assert scalar(admin, "SELECT count(*) FROM images") == before + 2
        cur.executemany("SELECT ? AS x", [(1,), (None,), (3,)])


def test_metadata(admin, reader):
    info = admin.adbc_get_info()
    assert info.get("vendor_name") and "imagelake" in info["vendor_name"].lower(), info
    assert info.get("vendor_version"), info
    types = admin.adbc_get_table_types()
    assert types and all(isinstance(t, str) for t in types), types

    columns_of = {}
    for depth in ["catalogs", "db_schemas", "tables", "columns", "all"]:
        catalogs = admin.adbc_get_objects(depth=depth).read_all().to_pylist()
        assert catalogs and all(c["catalog_name"] for c in catalogs), (depth, catalogs)
        if depth == "catalogs":
            assert all(not c["catalog_db_schemas"] for c in catalogs), catalogs
            continue
        schemas = [s for c in catalogs for s in c["catalog_db_schemas"] or []]
        assert schemas, (depth, catalogs)
        if depth == "db_schemas":
            assert all(s["db_schema_tables"] is None for s in schemas), schemas
            continue
        tables = {t["table_name"]: t for s in schemas for t in s["db_schema_tables"] or []}
        assert set(helpers.ALL_TABLES) <= set(tables), sorted(tables)
        for t in tables.values():
            assert t["table_type"] in types, (t["table_type"], types)
        if depth == "tables":
            assert all(not t["table_columns"] for t in tables.values())
            continue
        for name in helpers.ALL_TABLES:
            cols = tables[name]["table_columns"]
            assert [c["ordinal_position"] for c in cols] == list(range(1, len(cols) + 1)), cols
            columns_of[name] = [c["column_name"] for c in cols]

    for name in helpers.ALL_TABLES:
        schema = admin.adbc_get_table_schema(name)
        streamed = table(admin, f"SELECT * FROM {name} LIMIT 0").schema
        assert schema.names == streamed.names == columns_of[name], name
        assert [f.type for f in schema] == [f.type for f in streamed], name
    fails(("NOT_FOUND", "INVALID_ARGUMENT"), admin.adbc_get_table_schema, "nosuch")

    only = admin.adbc_get_objects(depth="columns", table_name_filter="fil%", column_name_filter="path").read_all().to_pylist()
    found = [(t["table_name"], [c["column_name"] for c in t["table_columns"]])
             for c in only for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
    assert found == [("files", ["path"])], found
    # A reader sees the same tables (their rows are what grants limit).
    names = {t["table_name"] for c in reader.adbc_get_objects(depth="tables").read_all().to_pylist()
             for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
    assert set(helpers.ALL_TABLES) <= names


def test_a_million_rows_in_bounded_memory(admin, report):
    total = scalar(admin, "SELECT count(*) FROM files")
    bulk = scalar(admin, "SELECT count(*) FROM files f JOIN images i USING (image_id) WHERE i.name LIKE 'bulk%'")
    assert bulk == helpers.BULK_ROWS and total >= 1_000_000, (bulk, total)

    helpers.reset_peak()
    before = helpers.memory()
    started = time.monotonic()
    got = table(admin, "SELECT * FROM files")
    took = time.monotonic() - started
    peak = helpers.memory()["VmHWM"]
    assert got.num_rows == total
    growth = peak - before["VmRSS"]
    mib = 1 << 20
    report(f"a million rows: {got.num_rows} files rows ({got.nbytes / mib:.0f} MiB as Arrow) in {took:.2f} s "
           f"({got.num_rows / took:,.0f} rows/s); server RSS {before['VmRSS'] / mib:.0f} MiB before, "
           f"peak {peak / mib:.0f} MiB (+{growth / mib:.0f} MiB)")
    assert growth < min(256 * mib, got.nbytes // 2), (
        f"the server's peak grew by {growth / mib:.0f} MiB for a {got.nbytes / mib:.0f} MiB answer")

    # It came in many batches (a stream, not one answer built whole).
    client, options, _ = login("admin")
    info = client.get_flight_info(statement("SELECT image_id, path, size FROM files"), options)
    batches = 0
    for endpoint in info.endpoints:
        for chunk in client.do_get(endpoint.ticket, options):
            batches += 1
            assert chunk.data.num_rows <= 65536
    assert batches >= 16, batches


def test_eight_clients_at_once(report):
    questions = [
        ("admin", "SELECT name, version, image_id FROM images ORDER BY image_id"),
        ("admin", "SELECT image_id, count(*), sum(size) FROM files GROUP BY image_id ORDER BY image_id"),
        ("reader", "SELECT name, version FROM images ORDER BY 1, 2"),
        ("reader", "SELECT path, size FROM files WHERE path LIKE '/etc/%' ORDER BY path, size"),
        ("reader", "SELECT * FROM compare('web@1', 'web@2') ORDER BY entry, path, package"),
        ("admin", "SELECT p.name, count(*) FROM packages p GROUP BY 1 ORDER BY 1"),
    ]

    def ask_all(user):
        conn = connect(user)
        try:
            return {sql: table(conn, sql) for who, sql in questions if who == user}
        finally:
            conn.close()

    alone = {**ask_all("admin"), **ask_all("reader")}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: ask_all("admin" if i % 2 else "reader"), range(8)))
    took = time.monotonic() - started
    report(f"eight clients: {8 * len(questions) // 2} answers in {took:.2f} s")
    for answers in results:
        for sql, got in answers.items():
            assert got.equals(alone[sql]), sql


BUSY = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v) WHERE v % 7 = 3"


def _busy_for(seconds):
    """CPU seconds per second the server spends over the next `seconds`."""
    c0, t0 = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds() - c0) / (time.monotonic() - t0)


def _stops_within_a_second(start_and_cancel, report, label):
    """Runs a long query, cancels it, and checks the server is busy before and idle a second
    after."""
    idle = _busy_for(0.5)
    cancel = start_and_cancel()
    time.sleep(1.0)  # the work gets going
    busy = _busy_for(1.0)
    cancelled = time.monotonic()
    cancel()
    time.sleep(1.0)  # within a second of the cancel...
    after = _busy_for(1.0)  # ...the server is idle again
    report(f"cancel ({label}): server CPU {idle:.2f} idle, {busy:.2f} while working, "
           f"{after:.2f} from 1 s after the cancel ({time.monotonic() - cancelled:.1f} s)")
    assert busy > 0.5, f"{label}: the server was not working ({busy:.2f} CPU s/s)"
    assert after < 0.15, f"{label}: the server still works a second after the cancel ({after:.2f} CPU s/s)"


def test_a_cancelled_stream_stops_the_work(report):
    # 1. pyarrow.flight: the call's deadline passes while the server computes the answer.
    client, options, header = login("admin")
    errors = []

    def deadline():
        def run():
            try:
                opts = flight.FlightCallOptions(headers=[header], timeout=2.0)
                info = client.get_flight_info(statement(BUSY), opts)
                client.do_get(info.endpoints[0].ticket, opts).read_all()
                errors.append("answered")
            except Exception as exc:  # noqa: BLE001: the deadline is the point
                errors.append(exc)
        thread = threading.Thread(target=run)
        thread.start()
        return thread.join

    _stops_within_a_second(deadline, report, "deadline")
    assert errors and not isinstance(errors[0], str), errors
    assert helpers.grpc_status(errors[0]) in ("DEADLINE_EXCEEDED", "CANCELLED"), errors[0]

    # 2. pyarrow.flight: the client reads the first batch and cancels the stream; the rest of
    # the answer (a long aggregate) is never needed.
    stream = f"SELECT 1 AS x UNION ALL SELECT count(*) FROM ({BUSY})"

    def read_one_then_cancel():
        info = client.get_flight_info(statement(stream), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        reader.read_chunk()
        return reader.cancel

    _stops_within_a_second(read_one_then_cancel, report, "stream cancelled after one batch")

    # 3. ADBC: the cursor is closed with the stream half read.
    def adbc_close():
        conn = connect("admin")
        cur = conn.cursor()
        cur.execute(stream)
        batches = cur.fetch_record_batch()
        batches.read_next_batch()

        def close():
            batches.close()
            cur.close()
            conn.close()
        return close

    _stops_within_a_second(adbc_close, report, "ADBC cursor closed")

    # 4. CancelFlightInfo, while another call waits for the answer.
    waited = []

    def cancel_flight_info():
        info = client.get_flight_info(statement(BUSY), options)

        def wait():
            try:
                client.do_get(info.endpoints[0].ticket, options).read_all()
                waited.append("answered")
            except Exception as exc:  # noqa: BLE001
                waited.append(exc)
        thread = threading.Thread(target=wait)
        thread.start()

        def cancel():
            results = list(client.do_action(flight.Action("CancelFlightInfo", field(1, info.serialize())), options))
            status = helpers.parse(results[0].body.to_pybytes()).get(1, [0])[0]
            assert status in (1, 2), f"CancelFlightInfo answered status {status}"  # CANCELLED, CANCELLING
            thread.join(5)
            assert not thread.is_alive(), "do_get still waits after CancelFlightInfo"
        return cancel

    _stops_within_a_second(cancel_flight_info, report, "CancelFlightInfo")
    assert waited and not isinstance(waited[0], str), waited


def test_a_command_runs_once_when_its_ticket_is_fetched_twice(admin):
    client, options, _ = login("admin")
    count = "SELECT count(*) FROM images WHERE name = 'twice'"
    assert scalar(admin, count) == 0
    info = client.get_flight_info(statement("SELECT * FROM clone('db@1', 'twice')"), options)
    (endpoint,) = info.endpoints
    first = client.do_get(endpoint.ticket, options).read_all()
    assert first.num_rows == 1, first
    try:
        second = client.do_get(endpoint.ticket, options).read_all()
        assert second.equals(first), (first, second)  # the first result, handed again
    except (pa.ArrowException,) as exc:
        assert helpers.grpc_status(exc) in ("NOT_FOUND", "FAILED_PRECONDITION", "INVALID_ARGUMENT"), exc
    assert scalar(admin, count) == 1
    assert scalar(admin, "SELECT count(*) FROM provenance p JOIN images i USING (image_id) WHERE i.name = 'twice'") == 1

    # Through ADBC, which prepares first and then executes: once too.
    got = rows(admin, "SELECT * FROM clone('db@1', 'once')")
    assert len(got) == 1
    assert scalar(admin, "SELECT count(*) FROM images WHERE name = 'once'") == 1


def test_commands_read_the_data_root(admin):
    """A remote checkin reads a disk under the data root (the positive side of the path rule)."""
    got = table(admin, f"SELECT * FROM checkin('{DATA_ROOT}/incoming/db.img', 'dbtwo')").to_pylist()
    assert len(got) == 1, got
    assert rows(admin, "SELECT name, version FROM images WHERE name = 'dbtwo'") == [("dbtwo", 1)]
    assert scalar(admin, "SELECT read_text('dbtwo', '/etc/hostname')") == "db\n"

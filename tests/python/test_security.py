"""Who may do what over Flight SQL: authentication (UNAUTHENTICATED), rights and data roots
(PERMISSION_DENIED, or NOT_FOUND where an object must not be confirmed), bad requests
(INVALID_ARGUMENT), calls not offered (UNIMPLEMENTED), each refusal leaving the library as it
was; and row-level access: a reader granted web* sees exactly what an admin sees of those
images, through every table and function, and an ungranted image answers as a missing one.
"""

import base64
import re
import statistics
import time

import adbc_driver_manager as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import helpers
from helpers import (DATA_ROOT, OUTSIDE, USERS, cli, command, connect, fails, field, login, message,
                     prepare, prepared, rows, scalar, statement, table, unchanged, with_token)

DENIED = ("PERMISSION_DENIED",)
DENIED_OR_MISSING = ("PERMISSION_DENIED", "NOT_FOUND")


def run(conn, sql, params=None):
    return table(conn, sql, params)


# --- authentication -------------------------------------------------------------------------


def test_no_token(admin):
    client = flight.connect(helpers.URI)
    with unchanged(admin):
        fails("UNAUTHENTICATED", client.get_flight_info, statement("SELECT * FROM clone('db@1', 'notoken')"))
        fails("UNAUTHENTICATED", client.get_flight_info, statement("SELECT 1"))
        fails("UNAUTHENTICATED", lambda: list(client.do_action(flight.Action(
            "CreatePreparedStatement", command("ActionCreatePreparedStatementRequest", field(1, "SELECT 1"))))))
        fails("UNAUTHENTICATED", lambda: client.do_get(flight.Ticket(b"anything")).read_all())
        bogus = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-token")])
        fails("UNAUTHENTICATED", client.get_flight_info, statement("SELECT 1"), bogus)
        # ADBC without credentials: the first call is refused.
        conn = connect(None)
        fails("UNAUTHENTICATED", run, conn, "SELECT 1")
        conn.close()


def test_wrong_password_and_unknown_user(admin):
    with unchanged(admin):
        wrong = fails("UNAUTHENTICATED", connect, "reader", "not-the-password")
        unknown = fails("UNAUTHENTICATED", connect, "nobody-at-all", "whatever")
        # The same answer: nothing tells a user that exists from one that does not.
        assert message(wrong) == message(unknown), (str(wrong), str(unknown))
        fails("UNAUTHENTICATED", flight.connect(helpers.URI).authenticate_basic_token, "reader", "nope")
        fails("UNAUTHENTICATED", flight.connect(helpers.URI).authenticate_basic_token, "nobody-at-all", "nope")

    # ... in about the same time.
    def timed(user, password):
        client = flight.connect(helpers.URI)
        started = time.perf_counter()
        try:
            client.authenticate_basic_token(user, password)
        except flight.FlightUnauthenticatedError:
            pass
        return time.perf_counter() - started
    known = statistics.median(timed("reader", f"wrong-{i}") for i in range(5))
    missing = statistics.median(timed(f"nobody-{i}", "wrong") for i in range(5))
    assert 1 / 3 < known / missing < 3, f"wrong password {known:.3f} s, unknown user {missing:.3f} s"


class _Basic(flight.ClientAuthHandler):
    """The handshake with only the headers its call options carry (no payload)."""

    def authenticate(self, outgoing, incoming):
        outgoing.write(b"")
        incoming.read()

    def get_token(self):
        return b""


def test_basic_credentials_with_and_without_padding(admin):
    # "admin:admin-pw-5c1e" is 19 bytes: base64 pads it with one '='.
    credentials = base64.b64encode(f"admin:{USERS['admin']}".encode())
    assert credentials.endswith(b"=")
    for value in (credentials, credentials.rstrip(b"=")):
        client = flight.connect(helpers.URI)
        client.authenticate(_Basic(), flight.FlightCallOptions(headers=[(b"authorization", b"Basic " + value)]))
    wrong = base64.b64encode(b"admin:wrong-password-x").rstrip(b"=")
    fails("UNAUTHENTICATED", flight.connect(helpers.URI).authenticate, _Basic(),
          flight.FlightCallOptions(headers=[(b"authorization", b"Basic " + wrong)]))


def test_expired_token(admin):
    client, options, header = login("reader", uri=helpers.SHORT_URI)
    assert client.get_flight_info(statement("SELECT 1"), options).endpoints
    conn = with_token(header, helpers.SHORT_URI)
    assert rows(conn, "SELECT 1") == [(1,)]
    time.sleep(helpers.SHORT_TTL + 1.0)
    with unchanged(admin):
        fails("UNAUTHENTICATED", client.get_flight_info, statement("SELECT 1"), options)
        fails("UNAUTHENTICATED", run, conn, "SELECT 2")
        # The token expired on every server of the library, not only on the one that made it.
        fails("UNAUTHENTICATED", flight.connect(helpers.URI).get_flight_info, statement("SELECT 1"), options)
    conn.close()


def test_revoked_token(admin):
    client, options, header = login("revokee")
    assert client.get_flight_info(statement("SELECT 1"), options).endpoints
    conn = connect("revokee")
    assert rows(conn, "SELECT 1") == [(1,)]
    token_conn = with_token(header)
    assert rows(token_conn, "SELECT 1") == [(1,)]
    cli("user", "revoke-tokens", "revokee")
    with unchanged(admin):
        fails("UNAUTHENTICATED", client.get_flight_info, statement("SELECT 1"), options)
        fails("UNAUTHENTICATED", run, token_conn, "SELECT 2")
        fails("UNAUTHENTICATED", run, conn, "SELECT 3")
    # Logging in again gives a new token that works.
    client, options, _ = login("revokee")
    assert client.get_flight_info(statement("SELECT 1"), options).endpoints
    for c in (conn, token_conn):
        c.close()


# --- rights ---------------------------------------------------------------------------------


def test_reader_commands_are_refused(admin, reader):
    writer = connect("writer")
    refused = [
        (reader, DENIED, f"SELECT * FROM checkin('{DATA_ROOT}/incoming/web2.img', 'web')"),
        (reader, DENIED, "SELECT * FROM patch('web@2', 'web@1', 'web@2')"),
        (reader, DENIED, "SELECT patch('web@2', 'web@1', 'web@2')"),
        (reader, DENIED, "SELECT * FROM gc()"),
        (reader, DENIED, "SELECT * FROM clone('web@1', 'webclone')"),
        (reader, DENIED, f"SELECT * FROM replace_content('web@2', '/etc/motd', '{DATA_ROOT}/motd.new')"),
        (reader, DENIED, f"SELECT replace_content('web@2', '/etc/motd', '{DATA_ROOT}/motd.new')"),
        (reader, DENIED, "SELECT * FROM remove('web@2', '/etc/motd')"),
        (reader, DENIED, "SELECT * FROM delete('web@1')"),
        (reader, DENIED_OR_MISSING, "SELECT * FROM patch('db@1', 'web@1', 'web@2')"),
        (reader, DENIED_OR_MISSING, "SELECT * FROM delete('db@1')"),
        (reader, DENIED, "SELECT * FROM users()"),
        (reader, DENIED, "SELECT * FROM grants()"),
        # write on web* is not admin: no gc, no delete, nothing outside web*.
        (writer, DENIED, "SELECT * FROM gc()"),
        (writer, DENIED, "SELECT * FROM delete('web@1')"),
        (writer, DENIED, "SELECT * FROM clone('web@1', 'dbcopy')"),
        (writer, DENIED_OR_MISSING, "SELECT * FROM clone('db@1', 'webdb')"),
        (writer, DENIED, "SELECT * FROM users()"),
    ]
    for conn, statuses, sql in refused:
        with unchanged(admin):
            fails(statuses, run, conn, sql)
    # The same calls through prepared statements with parameters.
    with unchanged(admin):
        fails(DENIED, run, reader, "SELECT clone(?, ?)", ("web@1", "webclone"))
        with reader.cursor() as cur:
            fails(DENIED, cur.executemany, "SELECT clone(?, ?)", [("web@1", "webclone1"), ("web@1", "webclone2")])
    writer.close()


def test_admin_functions(admin):
    users = {v for r in table(admin, "SELECT * FROM users()").to_pylist() for v in r.values()}
    assert set(USERS) <= users, users
    grants = table(admin, "SELECT * FROM grants()").to_pylist()
    assert any("web*" in g.values() and "reader" in g.values() for g in grants), grants
    for g in grants:
        assert not any("pw-" in str(v) for v in g.values()), "a password in grants()"
    for u in table(admin, "SELECT * FROM users()").to_pylist():
        assert not any(USERS.get(u["name"], "\0") in str(v) for v in u.values()), "a password in users()"


def test_reader_copy_set_ddl(admin, reader):
    statements = [
        f"COPY (SELECT * FROM images) TO '{DATA_ROOT}/leak.parquet'",
        f"COPY images TO '{DATA_ROOT}/leak.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SET datafusion.catalog.information_schema = true",
        "CREATE TABLE copied AS SELECT * FROM files",
        "CREATE VIEW everything AS SELECT * FROM images",
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "DROP TABLE files",
        "CREATE SCHEMA mine",
    ]
    for sql in statements:
        with unchanged(admin):
            fails(DENIED, run, reader, sql)
    # URL tables: a host file is no table for a reader, and nothing of it shows.
    with unchanged(admin):
        exc = fails(("PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT"), run, reader, "SELECT * FROM '/etc/passwd'")
        assert "root:" not in str(exc)


def test_paths_outside_the_data_roots(admin):
    cases = [
        f"SELECT * FROM checkin('{OUTSIDE}/db.img', 'outsider')",
        f"SELECT * FROM checkin('{DATA_ROOT}/escape/db.img', 'outsider')",  # a link that leads out
        f"SELECT * FROM checkin('{DATA_ROOT}/../outside/db.img', 'outsider')",
        f"SELECT * FROM checkin('/etc/passwd', 'outsider')",
        f"SELECT * FROM checkout('web@1', '{OUTSIDE}/web.raw')",
        f"SELECT checkout_to('web@1', '{OUTSIDE}/web2.raw')",
        f"SELECT * FROM replace_content('web@2', '/etc/motd', '/etc/passwd')",
        f"SELECT * FROM import('web@2', '{OUTSIDE}', '/srv/outside')",
        f"COPY (SELECT 1) TO '{OUTSIDE}/one.csv'",
    ]
    for sql in cases:
        with unchanged(admin):
            exc = fails(DENIED, run, admin, sql)
            # The refusal names the data roots, so that an admin knows where to put things.
            assert DATA_ROOT in message(exc), (sql, message(exc))


def test_a_ticket_or_handle_replayed_by_another_user(admin):
    client, admin_options, _ = login("admin")
    _, reader_options, _ = login("reader")
    info = client.get_flight_info(statement("SELECT * FROM images WHERE name = 'db'"), admin_options)
    ticket = info.endpoints[0].ticket
    with unchanged(admin):
        fails(DENIED_OR_MISSING, lambda: client.do_get(ticket, reader_options).read_all())
    assert client.do_get(ticket, admin_options).read_all().num_rows == 1

    # A command's ticket: the reader cannot make the admin's command run.
    info = client.get_flight_info(statement("SELECT * FROM clone('db@1', 'replayed')"), admin_options)
    with unchanged(admin):
        fails(DENIED_OR_MISSING, lambda: client.do_get(info.endpoints[0].ticket, reader_options).read_all())

    # A prepared statement's handle.
    handle = prepare(client, admin_options, "SELECT name FROM images WHERE name = 'db'")
    with unchanged(admin):
        fails(DENIED_OR_MISSING, client.get_flight_info, prepared(handle), reader_options)
        # Another user's close is refused, or does nothing: the handle stays the admin's.
        try:
            list(client.do_action(flight.Action("ClosePreparedStatement", command(
                "ActionClosePreparedStatementRequest", field(1, handle))), reader_options))
        except pa.ArrowException as exc:
            assert helpers.grpc_status(exc) in DENIED_OR_MISSING, exc
    got = helpers.fetch(client, admin_options, client.get_flight_info(prepared(handle), admin_options))
    assert got.column(0).to_pylist() == ["db"]


def test_invalid_arguments(admin, reader):
    client, options, _ = login("admin")
    with unchanged(admin):
        for sql in ["SELEC 1", "SELECT * FROM", "SELECT (1", "SELECT 'unterminated"]:
            fails("INVALID_ARGUMENT", run, reader, sql)
            fails("INVALID_ARGUMENT", client.get_flight_info, statement(sql), options)
        # Wrong parameter types and counts.
        fails("INVALID_ARGUMENT", run, admin, "SELECT * FROM images WHERE image_id = ? + 1", ("not a number",))
        fails("INVALID_ARGUMENT", run, admin, "SELECT ? + ?", (1,))
        # Tampered tickets: the admin's own, changed.
        info = client.get_flight_info(statement("SELECT name FROM images"), options)
        ticket = info.endpoints[0].ticket.ticket
        variants = [ticket[:-1], ticket + b"x", b"", b"\x00garbage", bytes(reversed(ticket))]
        for at in sorted({0, len(ticket) // 2, len(ticket) - 1}):
            variants.append(ticket[:at] + bytes([ticket[at] ^ 0x01]) + ticket[at + 1:])
        for tampered in variants:
            fails("INVALID_ARGUMENT", lambda: client.do_get(flight.Ticket(tampered), options).read_all())
    assert client.do_get(flight.Ticket(ticket), options).read_all().num_rows > 0


def test_unimplemented_calls(admin):
    client, options, _ = login("admin")
    with unchanged(admin):
        for name, body in [
            ("CommandGetPrimaryKeys", field(3, "files")),
            ("CommandGetExportedKeys", field(3, "files")),
            ("CommandGetImportedKeys", field(3, "files")),
            ("CommandStatementSubstraitPlan", b""),
        ]:
            fails("UNIMPLEMENTED", client.get_flight_info, flight.FlightDescriptor.for_command(command(name, body)), options)
        fails("UNIMPLEMENTED", lambda: list(client.do_action(flight.Action(
            "BeginTransaction", command("ActionBeginTransactionRequest")), options)))
        fails("UNIMPLEMENTED", lambda: list(client.list_flights(options=options)))

        def exchange():
            _, stream = client.do_exchange(flight.FlightDescriptor.for_command(b"x"), options)
            return stream.read_all()
        fails("UNIMPLEMENTED", exchange)
        with admin.cursor() as cur:
            fails("UNIMPLEMENTED", cur.adbc_ingest, "images", pa.table({"name": ["x"]}), mode="append")


# --- row-level access -----------------------------------------------------------------------


def _scoped(ids):
    """Each catalog table as the admin sees it when limited to `ids` (the reader's images)."""
    where = f"image_id IN ({', '.join(map(str, ids))})"
    scoped = {t: f"(SELECT * FROM {t} WHERE {where})" for t in helpers.IMAGE_TABLES}
    scoped["chunks"] = f"(SELECT * FROM chunks WHERE chunk_hash IN (SELECT chunk_hash FROM extents WHERE {where}))"
    return scoped


QUESTIONS = [
    "SELECT count(*) FROM {images} i",
    "SELECT * FROM {images} i ORDER BY image_id",
    "SELECT * FROM {partitions} p ORDER BY image_id, partition",
    "SELECT * FROM {packages} p ORDER BY image_id, name",
    "SELECT * FROM {provenance} p ORDER BY image_id",
    "SELECT count(*), sum(size), count(DISTINCT path), max(path), min(image_id), max(image_id) FROM {files} f",
    "SELECT count(*), sum(length), count(DISTINCT image_id) FROM {extents} e",
    "SELECT count(*), sum(size) FROM {chunks} c",
    "SELECT i.name, i.version, count(*), sum(f.size) FROM {images} i JOIN {files} f ON f.image_id = i.image_id "
    "GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT p.name, count(*) FROM {packages} p JOIN {images} i ON p.image_id = i.image_id GROUP BY 1 ORDER BY 1",
    "SELECT i.name, count(p.name) FROM {images} i LEFT JOIN {packages} p ON p.image_id = i.image_id GROUP BY 1 ORDER BY 1",
    "WITH n AS (SELECT image_id, count(*) AS c FROM {files} f GROUP BY image_id) SELECT sum(c), max(c), count(*) FROM n",
    "SELECT name FROM {packages} p UNION SELECT path FROM {files} f WHERE f.path LIKE '/etc/%' ORDER BY 1",
    "SELECT name FROM {images} i UNION ALL SELECT name FROM {packages} p ORDER BY 1",
    "SELECT name, version, rank() OVER (PARTITION BY name ORDER BY version DESC) AS r, count(*) OVER () AS total "
    "FROM {images} i ORDER BY 1, 2",
    "SELECT f.path, f.image_id, row_number() OVER (ORDER BY f.size DESC, f.path, f.image_id) AS n "
    "FROM {files} f WHERE f.path LIKE '/etc/%' ORDER BY n LIMIT 20",
    "SELECT count(*) FROM {files} f WHERE f.image_id NOT IN (SELECT image_id FROM {images} i WHERE i.name LIKE 'web%')",
    "SELECT count(*) FROM {files} f WHERE EXISTS "
    "(SELECT 1 FROM {packages} p WHERE p.image_id = f.image_id AND p.name = 'mariadb-server')",
    "SELECT count(*) FROM {images} a CROSS JOIN {images} b",
    "SELECT count(*) FROM {images} i WHERE name = 'db' OR hostname = 'db'",
    "SELECT max(image_id), count(*) FROM {files} f WHERE path = '/etc/mysql/secret.cnf'",
    "SELECT operation, count(*) FROM {provenance} p GROUP BY 1 ORDER BY 1",
    "SELECT approx_distinct(path), count(*) FILTER (WHERE size > 0) FROM {files} f",
]


def test_a_reader_sees_what_an_admin_sees_of_the_granted_images(admin, reader, web_ids):
    scoped = _scoped(web_ids)
    bare = {t: t for t in scoped}
    assert scalar(reader, "SELECT count(*) FROM images") == len(web_ids) > 0
    for q in QUESTIONS:
        mine = table(reader, q.format(**bare))
        theirs = table(admin, q.format(**scoped))
        assert mine.to_pylist() == theirs.to_pylist(), f"{q}\nreader: {mine.to_pylist()[:5]}\nadmin:  {theirs.to_pylist()[:5]}"
    for t in helpers.ALL_TABLES:
        assert scalar(reader, f"SELECT count(*) FROM {t}") == scalar(admin, f"SELECT count(*) FROM {scoped[t]} s"), t


def test_a_reader_sees_what_an_admin_sees_through_the_functions(admin, reader):
    for sql in [
        "SELECT * FROM compare('web@1', 'web@2')",
        "SELECT * FROM ls('web@2', '/etc')",
        "SELECT * FROM ls('webapp@1', '2:/EFI')",
        "SELECT * FROM file_lines('web@1', '/etc/nginx/nginx.conf')",
        "SELECT * FROM history('web')",
        "SELECT read_text('web@2', '/etc/motd'), read_bytes('webapp@1', '/etc/hostname')",
        "SELECT image_id, name, version, logical_bytes, data_bytes, files, packages FROM image_stats('web@1', 'web@2', 'webapp@1')",
    ]:
        mine, theirs = table(reader, sql), table(admin, sql)
        assert mine.to_pylist() == theirs.to_pylist(), sql


def test_errors_on_hidden_rows_never_surface(admin, reader, hidden_ids, web_ids):
    everything = scalar(reader, "SELECT count(*) FROM files")
    for hidden in hidden_ids:
        probe = f"SELECT count(*) FROM files WHERE 1 / (CASE WHEN image_id = {hidden} THEN 0 ELSE 1 END) = 1"
        assert scalar(reader, probe) == everything, hidden
    for sql in [
        "SELECT count(*) FROM images WHERE 1 / (CASE WHEN name = 'db' THEN 0 ELSE 1 END) = 1",
        "SELECT count(*) FROM packages WHERE 1 / (CASE WHEN name = 'mariadb-server' THEN 0 ELSE 1 END) = 1",
        "SELECT count(*) FROM files WHERE 1 / (CASE WHEN path = '/etc/mysql/secret.cnf' THEN 0 ELSE 1 END) = 1",
        "SELECT count(*) FROM partitions WHERE 1 / (CASE WHEN image_id IN (SELECT image_id FROM images) THEN 1 ELSE 0 END) = 1",
        "SELECT count(*) FROM files WHERE CAST(CASE WHEN path LIKE '/d0%' THEN 'x' ELSE '1' END AS BIGINT) = 1",
    ]:
        table(reader, sql)
    # The probe itself works: on a row the reader does see, it fails.
    fails(("INVALID_ARGUMENT", "INTERNAL", "UNKNOWN"), scalar, reader,
          f"SELECT count(*) FROM files WHERE 1 / (CASE WHEN image_id = {web_ids[0]} THEN 0 ELSE 1 END) = 1")
    # The admin, who sees the hidden rows, does trip over them.
    fails(("INVALID_ARGUMENT", "INTERNAL", "UNKNOWN"), scalar, admin,
          f"SELECT count(*) FROM files WHERE 1 / (CASE WHEN image_id = {hidden_ids[0]} THEN 0 ELSE 1 END) = 1")


def _answer(conn, sql):
    """What a statement answers: its rows, or its error's status and the server's words."""
    try:
        return ("rows", table(conn, sql).to_pylist())
    except (adbc.Error, pa.ArrowException) as exc:
        return ("error", helpers.grpc_status(exc), message(exc))


def _normal(answer, name):
    """An answer with the image's name (or id) in it replaced."""
    return tuple(re.sub(r"(?<![\w.])" + re.escape(name) + r"(?!\w)", "<image>", str(part)) for part in answer)


def test_an_ungranted_image_answers_as_a_missing_one(admin, reader, hidden_ids):
    db_id = scalar(admin, "SELECT image_id FROM images WHERE name = 'db' AND version = 1")
    missing_id = 10_000_000
    writer = connect("writer")
    for template in [
        "SELECT * FROM compare('{x}', 'web@1')",
        "SELECT * FROM compare('web@1', '{x}')",
        "SELECT * FROM ls('{x}', '/etc')",
        "SELECT * FROM file_lines('{x}', '/etc/motd')",
        "SELECT * FROM image_stats('{x}')",
        "SELECT * FROM image_stats('web@1', '{x}')",
        "SELECT read_text('{x}', '/etc/motd')",
        "SELECT read_bytes('{x}', '/etc/mysql/secret.cnf')",
        "SELECT * FROM images WHERE name = '{x}'",
    ]:
        for hidden, missing in [("db@1", "nosuch@1"), ("db", "nosuch"), (str(db_id), str(missing_id))]:
            sql_hidden, sql_missing = template.format(x=hidden), template.format(x=missing)
            a, b = _answer(reader, sql_hidden), _answer(reader, sql_missing)
            assert _normal(a, hidden) == _normal(b, missing), f"{sql_hidden}: {a}\n{sql_missing}: {b}"
    for template in ["SELECT * FROM history('{x}')", "SELECT * FROM compare('{x}@1', '{x}@1')"]:
        a, b = _answer(reader, template.format(x="db")), _answer(reader, template.format(x="nosuch"))
        assert _normal(a, "db") == _normal(b, "nosuch"), (a, b)
    # Commands on a hidden image, by someone who may write: as on a missing one.
    with unchanged(admin):
        a = _answer(writer, "SELECT * FROM patch('db@1', 'web@1', 'web@2')")
        b = _answer(writer, "SELECT * FROM patch('nosuch@1', 'web@1', 'web@2')")
        assert a[0] == "error" and a[1] == b[1] and a[2].replace("db@1", "<>") == b[2].replace("nosuch@1", "<>"), (a, b)
    writer.close()

    # A user with no grants at all sees an empty library.
    nobody = connect("nogrants")
    for t in helpers.ALL_TABLES:
        assert scalar(nobody, f"SELECT count(*) FROM {t}") == 0, t
    nobody.close()


def test_explain_tells_nothing_of_hidden_rows(admin, reader, hidden_ids):
    total = scalar(admin, "SELECT count(*) FROM files")
    hidden = scalar(admin, f"SELECT count(*) FROM files WHERE image_id IN ({', '.join(map(str, hidden_ids))})")
    for sql in ["EXPLAIN ANALYZE SELECT count(*) FROM files", "EXPLAIN ANALYZE SELECT * FROM images",
                "EXPLAIN SELECT count(*) FROM files", "EXPLAIN VERBOSE SELECT count(*) FROM files"]:
        answer = _answer(reader, sql)
        if answer[0] == "error":
            assert answer[1] in DENIED, answer
            continue
        text = str(answer[1])
        for number in (total, hidden):
            assert not re.search(rf"(?<!\d){number}(?!\d)", text), f"{sql} shows {number}: {text[:3000]}"
        assert "secret.cnf" not in text and "'db'" not in text

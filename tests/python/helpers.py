"""What the Flight SQL tests share: the server and users they are given (environment variables
set by tests/tests/flight.rs), connections through ADBC and pyarrow.flight, the gRPC status of
an error from either, Flight SQL commands in protobuf for the calls ADBC does not make, and
probes of the server process (/proc) and of the library (as the admin sees it).
"""

import contextlib
import json
import os
import re
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager as adbc
import pyarrow as pa
import pyarrow.flight as flight

ENV = os.environ
URI = ENV.get("IMAGELAKE_FLIGHT_URI", "")
SHORT_URI = ENV.get("IMAGELAKE_FLIGHT_SHORT_URI", "")
SHORT_TTL = float(ENV.get("IMAGELAKE_FLIGHT_SHORT_TTL", "2"))
PID = int(ENV.get("IMAGELAKE_FLIGHT_PID", "0"))
USERS = json.loads(ENV.get("IMAGELAKE_FLIGHT_USERS", "{}"))
LIBRARY = ENV.get("IMAGELAKE_LIBRARY", "")
DATA_ROOT = ENV.get("IMAGELAKE_DATA_ROOT", "")
OUTSIDE = ENV.get("IMAGELAKE_OUTSIDE", "")
BIN = ENV.get("IMAGELAKE_BIN", "imagelake")
BULK_ROWS = int(ENV.get("IMAGELAKE_BULK_ROWS", "0"))

# The catalog tables that carry image_id (chunks does not: it is reached through extents).
IMAGE_TABLES = ["images", "partitions", "files", "packages", "provenance", "extents"]
ALL_TABLES = IMAGE_TABLES + ["chunks"]


# --- connections ---------------------------------------------------------------------------


def connect(user, password=None, uri=None, **db_kwargs):
    """An ADBC connection as `user` (its password from the environment unless given)."""
    kwargs = dict(db_kwargs)
    if user is not None:
        kwargs["username"] = user
        kwargs["password"] = USERS[user] if password is None else password
    return flightsql.connect(uri or URI, db_kwargs=kwargs, autocommit=True)


def with_token(header, uri=None):
    """An ADBC connection that sends `header` (b'Bearer ...') and never logs in itself."""
    value = header.decode() if isinstance(header, bytes) else header
    return flightsql.connect(
        uri or URI, db_kwargs={flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: value}, autocommit=True
    )


def table(conn, sql, params=None):
    """The whole answer as one Arrow table."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def rows(conn, sql, params=None):
    """The answer as a list of tuples, in the order the server gave."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def scalar(conn, sql, params=None):
    (row,) = rows(conn, sql, params)
    return row[0]


def login(user, password=None, uri=None):
    """A pyarrow.flight client and call options carrying `user`'s bearer token."""
    client = flight.connect(uri or URI)
    header = client.authenticate_basic_token(user, USERS[user] if password is None else password)
    return client, flight.FlightCallOptions(headers=[header]), header


# --- gRPC status of an error ----------------------------------------------------------------

GRPC = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
# grpc-go's names (codes.Code.String()), which the ADBC driver writes as "(Name; Operation)".
GO_NAMES = {
    "Canceled": 1, "Unknown": 2, "InvalidArgument": 3, "DeadlineExceeded": 4, "NotFound": 5,
    "AlreadyExists": 6, "PermissionDenied": 7, "ResourceExhausted": 8, "FailedPrecondition": 9,
    "Aborted": 10, "OutOfRange": 11, "Unimplemented": 12, "Internal": 13, "Unavailable": 14,
    "DataLoss": 15, "Unauthenticated": 16,
}
# What the ADBC driver maps each gRPC code to (adbcFromFlightStatus).
ADBC_OF = {
    "CANCELLED": adbc.AdbcStatusCode.CANCELLED, "INVALID_ARGUMENT": adbc.AdbcStatusCode.INVALID_ARGUMENT,
    "DEADLINE_EXCEEDED": adbc.AdbcStatusCode.TIMEOUT, "NOT_FOUND": adbc.AdbcStatusCode.NOT_FOUND,
    "ALREADY_EXISTS": adbc.AdbcStatusCode.ALREADY_EXISTS, "PERMISSION_DENIED": adbc.AdbcStatusCode.UNAUTHORIZED,
    "UNIMPLEMENTED": adbc.AdbcStatusCode.NOT_IMPLEMENTED, "INTERNAL": adbc.AdbcStatusCode.INTERNAL,
    "UNAVAILABLE": adbc.AdbcStatusCode.IO, "UNAUTHENTICATED": adbc.AdbcStatusCode.UNAUTHENTICATED,
}
# pyarrow's client words ("Flight returned <words> error") when no grpc_status is in the text.
PYARROW_WORDS = {
    "invalid argument": "INVALID_ARGUMENT", "not found": "NOT_FOUND", "unauthenticated": "UNAUTHENTICATED",
    "unauthorized": "PERMISSION_DENIED", "unimplemented": "UNIMPLEMENTED", "internal": "INTERNAL",
    "unavailable": "UNAVAILABLE", "timeout": "DEADLINE_EXCEEDED", "already exists": "ALREADY_EXISTS",
}


def grpc_status(exc):
    """The gRPC status code (its name, e.g. 'PERMISSION_DENIED') that an error carried.

    ADBC's Flight SQL driver names it in the message as "(PermissionDenied; ExecuteQuery)"
    (sometimes also as vendor_code, the number) and maps it onto the ADBC status_code;
    pyarrow.flight's messages carry "grpc_status:7" from gRPC's debug context, and its
    exception class. Each source that is present must agree."""
    text = str(exc)
    if isinstance(exc, adbc.Error):
        found = re.findall(r"\((" + "|".join(GO_NAMES) + r"); [^()]*\)", text)
        assert found, f"no gRPC code in ADBC error: {text!r}"
        name = GRPC[GO_NAMES[found[-1]]]
        if exc.vendor_code:
            assert GRPC[exc.vendor_code] == name, f"vendor code {exc.vendor_code} vs {name}: {text!r}"
        if name in ADBC_OF:
            assert exc.status_code == ADBC_OF[name], f"{exc.status_code!r} for {name}: {text!r}"
        return name
    numbers = re.findall(r"grpc_status:(\d+)", text)
    if numbers:
        name = GRPC[int(numbers[-1])]
    else:
        words = re.search(r"Flight returned ([a-z ]+?) error", text)
        if words and words.group(1) in PYARROW_WORDS:
            name = PYARROW_WORDS[words.group(1)]
        elif isinstance(exc, flight.FlightCancelledError) or "Flight cancelled call" in text:
            name = "CANCELLED"
        elif "Flight RPC failed" in text:
            name = "UNKNOWN"
        else:
            raise AssertionError(f"no gRPC code in {type(exc).__name__}: {text!r}")
    by_class = [
        (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"), (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
        (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"), (flight.FlightUnavailableError, "UNAVAILABLE"),
        (flight.FlightInternalError, "INTERNAL"), (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
        (pa.ArrowKeyError, "NOT_FOUND"), (pa.ArrowInvalid, "INVALID_ARGUMENT"),
    ]
    for klass, code in by_class:
        if isinstance(exc, klass):
            assert code == name or (code == "INVALID_ARGUMENT" and name in ("FAILED_PRECONDITION", "OUT_OF_RANGE", "RESOURCE_EXHAUSTED")), (
                f"{type(exc).__name__} carries {name}: {text!r}"
            )
    return name


def fails(statuses, fn, *args, **kwargs):
    """Calls fn, which must raise an error with one of `statuses` (a name or a tuple of names);
    returns the error."""
    if isinstance(statuses, str):
        statuses = (statuses,)
    try:
        result = fn(*args, **kwargs)
    except (adbc.Error, pa.ArrowException) as exc:
        got = grpc_status(exc)
        assert got in statuses, f"expected {'/'.join(statuses)}, got {got}: {exc}"
        return exc
    raise AssertionError(f"expected {'/'.join(statuses)}, got an answer: {result!r}"[:2000])


def message(exc):
    """The server's own words in an error, without the client's wrapping."""
    text = str(exc)
    if isinstance(exc, adbc.Error):
        m = re.search(r"\[FlightSQL\] (.*?) \((?:" + "|".join(GO_NAMES) + r"); ", text, re.S)
        return m.group(1) if m else text
    m = re.search(r"with message: (.*?)(?:\. gRPC client debug context:|\. Detail:|$)", text, re.S)
    return m.group(1) if m else text


# --- Flight SQL commands in protobuf (for pyarrow.flight) -----------------------------------


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """One protobuf field: bytes/str as length-delimited, bool/int as varint."""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)):
        return _varint(number << 3 | 2) + _varint(len(value)) + bytes(value)
    return _varint(number << 3) + _varint(int(value))


def parse(data):
    """A protobuf message's fields: {number: [value, ...]} (bytes or int)."""
    fields, i = {}, 0

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            length = varint()
            value, i = bytes(data[i:i + length]), i + length
        elif wire == 1:
            value, i = bytes(data[i:i + 8]), i + 8
        elif wire == 5:
            value, i = bytes(data[i:i + 4]), i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def command(name, body=b""):
    """google.protobuf.Any holding arrow.flight.protocol.sql.<name>."""
    return field(1, "type.googleapis.com/arrow.flight.protocol.sql." + name) + field(2, body)


def unpack(any_bytes):
    """(type name, body) of a google.protobuf.Any."""
    fields = parse(any_bytes)
    return fields[1][0].decode().rsplit(".", 1)[-1], fields.get(2, [b""])[0]


def statement(sql):
    return flight.FlightDescriptor.for_command(command("CommandStatementQuery", field(1, sql)))


def prepare(client, options, sql):
    """CreatePreparedStatement: the handle."""
    results = list(client.do_action(flight.Action("CreatePreparedStatement", command(
        "ActionCreatePreparedStatementRequest", field(1, sql))), options))
    kind, body = unpack(results[0].body.to_pybytes())
    assert kind == "ActionCreatePreparedStatementResult", kind
    return parse(body)[1][0]


def prepared(handle):
    return flight.FlightDescriptor.for_command(command("CommandPreparedStatementQuery", field(1, handle)))


def fetch(client, options, info):
    """Every endpoint's stream of a FlightInfo, as one table."""
    parts = [client.do_get(e.ticket, options).read_all() for e in info.endpoints]
    return pa.concat_tables(parts) if parts else None


# --- the server process ---------------------------------------------------------------------


def cpu_seconds(pid=None):
    """User and system CPU time the server has used (/proc/PID/stat)."""
    with open(f"/proc/{pid or PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid=None):
    """The server's VmRSS and VmHWM (peak) in bytes."""
    out = {}
    with open(f"/proc/{pid or PID}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid=None):
    """Starts VmHWM afresh at the current RSS (Linux: 5 into clear_refs)."""
    with open(f"/proc/{pid or PID}/clear_refs", "w") as f:
        f.write("5")


def cli(*args, stdin=None):
    """The imagelake command line on the server's library (as its owner)."""
    out = subprocess.run([BIN, "-L", LIBRARY, *args], input=stdin, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"imagelake {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


# --- the library, as the admin sees it ------------------------------------------------------


def state(admin):
    """What must not change when a request is refused: every images row (with its state),
    the count of every catalog table, and the files under the data root."""
    snapshot = {"images": rows(admin, "SELECT image_id, name, version, state FROM images ORDER BY image_id")}
    for t in ALL_TABLES:
        snapshot[t] = scalar(admin, f"SELECT count(*) FROM {t}")
    tree = []
    for root, dirs, files in os.walk(DATA_ROOT):
        for name in files:
            path = os.path.join(root, name)
            tree.append((path, os.path.getsize(path)))
    snapshot["data_root"] = sorted(tree)
    snapshot["outside"] = sorted(os.listdir(OUTSIDE)) if OUTSIDE else []
    return snapshot


@contextlib.contextmanager
def unchanged(admin):
    """The block must leave the library as it found it."""
    before = state(admin)
    yield
    after = state(admin)
    assert after == before, "the library changed:\n" + "\n".join(
        f"  {k}: {before[k]!r} -> {after[k]!r}" for k in before if before[k] != after[k])


def wait_until(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()

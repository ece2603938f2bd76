"""pytest's setup for the Flight SQL tests: they run against the server that
tests/tests/flight.rs starts (`cargo test -p imagelake-tests --test flight`), which says where
it is through environment variables; without them every test is skipped."""

import pytest

import helpers

REPORT = []


def pytest_collection_modifyitems(config, items):
    if not helpers.URI:
        skip = pytest.mark.skip(reason="no server: run through `cargo test -p imagelake-tests --test flight`")
        for item in items:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """The measurements the tests made (memory, CPU, times), for the log."""
    if REPORT:
        terminalreporter.section("measured")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def report():
    return REPORT.append


@pytest.fixture(scope="session")
def admin():
    conn = helpers.connect("admin")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def reader():
    conn = helpers.connect("reader")
    yield conn
    conn.close()


@pytest.fixture
def web_ids(admin):
    """The image ids the reader (granted web*) may see, as the admin finds them now."""
    return [r[0] for r in helpers.rows(admin, "SELECT image_id FROM images WHERE name LIKE 'web%' ORDER BY 1")]


@pytest.fixture
def hidden_ids(admin):
    return [r[0] for r in helpers.rows(admin, "SELECT image_id FROM images WHERE name NOT LIKE 'web%' ORDER BY 1")]

"""Data loading against hostile input: secrets in URLs, huge files, odd headers and values."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from kiln.config.errors import DataError
from kiln.training.data import DataLimits, load_csv, load_data, make_dataset
from tests.support.factories import write_csv

ROWS = [[1, 2, "x"], [1.5, 2.5, "x"], [8, 9, "y"], [8.5, 9.5, "y"]]
CSV = b"a,b,kind\n" + b"".join(f"{a},{b},{k}\n".encode() for a, b, k in ROWS)
FILES = {"/d.csv": CSV, "/bad.csv": b"a,kind\n1,x\ninf,y\n"}


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """A real HTTP server on loopback: FILES, /private.csv answers 401, the rest 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            path = self.path.split("?", 1)[0]
            if path in FILES:
                self.send_response(200)
                self.send_header("Content-Length", str(len(FILES[path])))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(FILES[path])
                return
            self.send_response(401 if path == "/private.csv" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_credentials_in_a_data_url_never_reach_the_dataset(http_server):
    url = f"http://user:secret@{http_server}/d.csv?token=abc"
    data = load_csv(url, "kind")
    assert data.n_rows == 4
    assert data.source == f"http://***@{http_server}/d.csv?token=***"


@pytest.mark.parametrize("path", ["absent.csv", "private.csv"])
def test_errors_about_a_data_url_do_not_echo_its_secrets(http_server, path):
    url = f"http://user:secret@{http_server}/{path}?token=abc"
    with pytest.raises(DataError) as caught:
        load_data(url, "kind")
    message = str(caught.value)
    assert "secret" not in message and "abc" not in message
    assert f"http://***@{http_server}/{path}?token=***" in message


def test_bad_values_in_a_url_source_are_reported_without_secrets(http_server):
    url = f"http://user:secret@{http_server}/bad.csv?token=abc"
    with pytest.raises(DataError) as caught:
        load_csv(url, "kind")
    assert str(caught.value) == (
        f"http://***@{http_server}/bad.csv?token=***: data row 2, column 'a': inf is not a "
        "finite number"
    )


def test_a_source_given_directly_is_redacted_too():
    import numpy as np

    data = make_dataset(
        np.array([[1.0], [2.0], [3.0], [4.0]]),
        np.array([0, 0, 1, 1]),
        ("a",),
        ("x", "y"),
        "https://u:pw@host/x.csv?sig=1",
    )
    assert data.source == "https://***@host/x.csv?sig=***"


def test_too_many_rows_is_one_clear_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "b", "kind"], ROWS * 3)
    assert load_csv(str(path), "kind", DataLimits(max_rows=12)).n_rows == 12
    with pytest.raises(DataError, match=r"more than 11 data rows.*KILN_MAX_DATA_ROWS"):
        load_csv(str(path), "kind", DataLimits(max_rows=11))


def test_too_many_bytes_is_refused_before_parsing(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "b", "kind"], ROWS)
    size = path.stat().st_size
    assert load_csv(str(path), "kind", DataLimits(max_bytes=size)).n_rows == 4
    with pytest.raises(DataError, match=rf"larger than {size - 1:,} bytes.*KILN_MAX_DATA_BYTES"):
        load_csv(str(path), "kind", DataLimits(max_bytes=size - 1))


def test_the_byte_limit_holds_when_the_size_is_unknown(http_server, monkeypatch):
    # A stream with no size up front (chunked HTTP, pipes) is cut off while reading.
    import fsspec.implementations.http as fs_http

    monkeypatch.setattr(fs_http.HTTPFileSystem, "_info", _no_size_info, raising=True)
    url = f"http://{http_server}/d.csv"
    fs_http.HTTPFileSystem.clear_instance_cache()
    try:
        with pytest.raises(DataError, match="larger than 20 bytes"):
            load_csv(url, "kind", DataLimits(max_bytes=20))
    finally:
        fs_http.HTTPFileSystem.clear_instance_cache()


async def _no_size_info(self, url, **kwargs):
    return {"name": url, "size": None, "type": "file"}


def test_limits_come_from_settings(tmp_path, kiln_cli):
    path = write_csv(tmp_path / "d.csv", ["a", "b", "kind"], ROWS)
    trained = kiln_cli(
        "train", "--data", str(path), "--label-column", "kind",
        store=tmp_path / "store", env={"KILN_MAX_DATA_ROWS": "3"},
    )  # fmt: skip
    assert trained.returncode == 1
    assert "more than 3 data rows" in trained.stderr and "KILN_MAX_DATA_ROWS" in trained.stderr
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.onnx"))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["a", "a", "kind"], r"column 'a' appears twice in the header \(columns 1 and 2\)"),
        (["a", "kind", "kind"], r"the label column 'kind' appears twice .*columns 2 and 3"),
    ],
)
def test_duplicate_headers_are_refused(tmp_path, header, message):
    path = write_csv(tmp_path / "d.csv", header, [[1, "x", "x"], [2, "y", "y"]])
    with pytest.raises(DataError, match=message):
        load_csv(str(path), "kind")


@pytest.mark.parametrize("value", ["1e308", "-1e39", "3.5e38"])
def test_values_beyond_float32_are_refused_by_name(tmp_path, value):
    rows = [[1, 2, "x"], [value, 2.5, "x"], [8, 9, "y"], [8.5, 9.5, "y"]]
    path = write_csv(tmp_path / "d.csv", ["a", "b", "kind"], rows)
    with pytest.raises(DataError, match=r"data row 2, column 'a': .* is beyond ±3.4e\+38"):
        load_csv(str(path), "kind")


def test_values_within_float32_train(tmp_path):
    rows = [[1e38, 2, "x"], [-1e38, 2.5, "x"], [8, 9, "y"], [8.5, 9.5, "y"]]
    path = write_csv(tmp_path / "d.csv", ["a", "b", "kind"], rows)
    # Trained on what the server's float32 input holds: 1e38 as float32 gives it.
    assert load_csv(str(path), "kind").X[0, 0] == float(np.float32(1e38))


def test_class_indices_follow_sorted_names_whatever_the_order(tmp_path):
    rows = [[1, "z"], [2, "a"], [3, "z"], [4, "a"], [5, "m"], [6, "m"]]
    data = load_csv(str(write_csv(tmp_path / "d.csv", ["v", "kind"], rows)), "kind")
    assert data.class_names == ("a", "m", "z")
    assert data.y.tolist() == [2, 0, 2, 0, 1, 1]


def test_quoted_multiline_fields_count_as_one_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('a,kind\n1,"x\nstill x"\n2,"x\nstill x"\ninf,y\n')
    with pytest.raises(DataError, match="data row 3, column 'a': inf is not a finite number"):
        load_csv(str(path), "kind")

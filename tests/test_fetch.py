"""`cellkit fetch bbbc021` against a local HTTP server (loopback only) with range support."""

import http.server
import io
import threading
import zipfile

import pandas as pd
import pytest
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets.bbbc021 import FetchError, download, fetch_bbbc021, plate_zip_name


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    truncate: set = set()
    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.lstrip("/")
        self.requests.append((name, self.headers.get("Range")))
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if name in self.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    RangeHandler.files, RangeHandler.truncate, RangeHandler.requests = {}, set(), []
    yield f"http://127.0.0.1:{srv.server_address[1]}/", RangeHandler
    srv.shutdown()


def _plate_zip(plate, names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in names:
            z.writestr(f"{plate}/{n}", b"tiff bytes of " + n.encode())
    return buf.getvalue()


def _bbbc021_files(plate="Week1_22123"):
    image = pd.DataFrame({"Image_Metadata_Plate_DAPI": [plate, "Week2_1"], "Image_FileName_DAPI": ["a.tif", "b.tif"]})
    return {
        "BBBC021_v1_image.csv": image.to_csv(index=False).encode(),
        "BBBC021_v1_compound.csv": b"compound,smiles\n",
        "BBBC021_v1_moa.csv": b"compound,concentration,moa\n",
        plate_zip_name(plate): _plate_zip(plate, ["a_w1.tif", "a_w2.tif"]),
    }


def test_fetch_plate_and_resume(server, tmp_path):
    url, handler = server
    handler.files = _bbbc021_files()
    zip_bytes = handler.files[plate_zip_name("Week1_22123")]
    # an interrupted earlier download left half the zip
    part = tmp_path / "zips" / (plate_zip_name("Week1_22123") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(zip_bytes[:100])
    fetch_bbbc021(tmp_path, plates=["Week1_22123"], base_url=url)
    assert (tmp_path / "Week1" / "Week1_22123" / "a_w2.tif").read_bytes() == b"tiff bytes of a_w2.tif"
    assert ("BBBC021_v1_images_Week1_22123.zip", "bytes=100-") in handler.requests
    assert not (tmp_path / "zips" / plate_zip_name("Week1_22123")).exists()
    # a second run downloads nothing more
    n = len(handler.requests)
    fetch_bbbc021(tmp_path, plates=["Week1_22123"], base_url=url)
    assert len(handler.requests) == n


def test_truncated_download_is_an_error_then_resumes(server, tmp_path):
    url, handler = server
    handler.files = {"x.bin": bytes(range(256)) * 10}
    handler.truncate = {"x.bin"}
    with pytest.raises(FetchError, match="run the command again to resume"):
        download(url + "x.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists() and (tmp_path / "x.bin.part").stat().st_size == 1280
    handler.truncate = set()
    download(url + "x.bin", tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == handler.files["x.bin"]


def test_unknown_plate_and_corrupt_zip(server, tmp_path):
    url, handler = server
    handler.files = _bbbc021_files()
    with pytest.raises(FetchError, match="unknown plates"):
        fetch_bbbc021(tmp_path, plates=["Week9_nope"], base_url=url)
    handler.files[plate_zip_name("Week2_1")] = b"not a zip at all"
    with pytest.raises(FetchError, match="not a valid zip"):
        fetch_bbbc021(tmp_path, plates=["Week2_1"], base_url=url)
    assert not (tmp_path / "Week2" / "Week2_1").exists()


def test_offline_message(tmp_path):
    # nothing listens on this loopback port: the same failure a user sees without a network
    result = CliRunner().invoke(app, ["fetch", "bbbc021", "--out", str(tmp_path), "--base-url", "http://127.0.0.1:9/"])
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "offline" in result.output and "Traceback" not in result.output

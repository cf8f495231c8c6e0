"""Download BBBC021 (images and metadata) from the Broad Bioimage Benchmark Collection.

Files: ``BBBC021_v1_image.csv``, ``BBBC021_v1_compound.csv``, ``BBBC021_v1_moa.csv`` and one zip of
images per plate (``BBBC021_v1_images_<plate>.zip``, about 0.5-1 GB each). Downloads resume from a
``.part`` file with an HTTP range request, are checked against the size the server announces and
(zips) for integrity, and are unpacked to ``<out>/<week>/<plate>/`` so that
`cellkit.io.from_bbbc021(out / "BBBC021_v1_image.csv", out / "BBBC021_v1_moa.csv", out)` reads them.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from .._logging import get_logger

logger = get_logger(__name__)

BASE_URL = "https://data.broadinstitute.org/bbbc/BBBC021/"
METADATA_FILES = ["BBBC021_v1_image.csv", "BBBC021_v1_compound.csv", "BBBC021_v1_moa.csv"]
CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A download failed: unreachable server, wrong size, corrupt archive."""


def plate_zip_name(plate: str) -> str:
    return f"BBBC021_v1_images_{plate}.zip"


def download(url: str, dest: str | os.PathLike, *, timeout: float = 60,
             progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part``; return ``dest``.

    The file appears at ``dest`` only once it is complete and its size equals the size the
    server announced. Raises `FetchError` with the reason otherwise.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # range not satisfiable: the part file is already whole or broken
            part.unlink()
            return download(url, dest, timeout=timeout, progress=progress)
        raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(
            f"cannot reach {url} ({getattr(err, 'reason', err)}). cellkit needs a network connection to "
            f"download BBBC021; on an offline machine, download the files elsewhere from {BASE_URL} and "
            "copy them into the output folder (plate zips are unpacked into <out>/<week>/<plate>/).") from err
    with response:
        resumed = response.status == 206
        if not resumed:
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as fh:
            done = start
            while block := response.read(CHUNK):
                fh.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    size = part.stat().st_size
    if total is not None and size != total:
        raise FetchError(f"{url}: got {size} bytes of {total}; run the command again to resume")
    os.replace(part, dest)
    return dest


def _unpack_plate(zip_path: Path, out: Path, plate: str) -> None:
    """Unpack a plate zip into ``out/<week>/<plate>/`` and mark it complete."""
    target = out / plate.split("_")[0] / plate
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise FetchError(f"{zip_path.name}: corrupt member {bad}")
            tmp = target.with_name(target.name + ".unpacking")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for member in archive.infolist():
                if member.is_dir():
                    continue
                name = Path(member.filename).name  # zips hold <plate>/<file>; flatten safely
                with archive.open(member) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        zip_path.unlink()
        raise FetchError(f"{zip_path.name} is not a valid zip ({err}); it was removed, run again") from err
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    (target / ".complete").touch()


def fetch_bbbc021(out: str | os.PathLike, *, plates: Iterable[str] | None = None, base_url: str = BASE_URL,
                  keep_zips: bool = False, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download BBBC021 metadata and the images of ``plates`` (default: all 55) into ``out``.

    Plates already unpacked are skipped; interrupted downloads resume. Returns ``out``. Each plate is
    logged to ``logging.getLogger("cellkit")``; ``progress(bytes_done, bytes_total)`` per download.
    """
    out = Path(out)
    base_url = base_url.rstrip("/") + "/"
    for name in METADATA_FILES:
        download(base_url + name, out / name)
    all_plates = pd.read_csv(out / "BBBC021_v1_image.csv")["Image_Metadata_Plate_DAPI"].unique().tolist()
    plates = list(plates) if plates is not None else all_plates
    unknown = sorted(set(plates) - set(all_plates))
    if unknown:
        raise FetchError(f"unknown plates {unknown}; BBBC021 plates are e.g. {all_plates[:3]}")
    for plate in plates:
        target = out / plate.split("_")[0] / plate
        if (target / ".complete").exists():
            logger.info(f"{plate}: already there")
            continue
        logger.info(f"{plate}: downloading")
        zip_path = download(base_url + plate_zip_name(plate), out / "zips" / plate_zip_name(plate),
                            progress=progress)
        _unpack_plate(zip_path, out, plate)
        if not keep_zips:
            zip_path.unlink()
    return out

import os

import numpy as np
import pandas as pd
import pytest
import tifffile

import cellkit as ck
from cellkit.io import PlateIndexError

from .conftest import real_path


@pytest.fixture(scope="module")
def bbbc021_index():
    meta = real_path("bbbc021_metadata")
    return ck.io.from_bbbc021(meta / "BBBC021_v1_image.csv.gz", meta / "BBBC021_v1_moa.csv", "/data/bbbc021",
                              check_files=False)


def test_bbbc021_counts(bbbc021_index):
    ix = bbbc021_index
    assert len(ix) == 13_200
    assert ix.plate.nunique() == 55
    assert ix.compound.nunique() == 113
    assert ix.batch.nunique() == 10
    assert ix.field_id.is_unique
    assert sorted(ix.site.unique()) == [1, 2, 3, 4]
    assert ck.io.channels_of(ix) == ["DNA", "Tubulin", "Actin"]
    labelled = ix.dropna(subset=["moa"])
    assert labelled.moa.nunique() == 13  # 12 MOAs + DMSO
    treatments = labelled[labelled.compound != "DMSO"][["compound", "concentration"]].drop_duplicates()
    assert len(treatments) == 103
    assert labelled[labelled.compound != "DMSO"].compound.nunique() == 38


def test_bbbc021_rows(bbbc021_index):
    row = bbbc021_index.iloc[0]
    assert row.field_id == "Week4_27481/G10/1"
    assert row.batch == "Week4"
    assert row.path_DNA == "/data/bbbc021/Week4/Week4_27481/G10_s1_w1BEDC2073-A983-4B98-95E9-84466707A25D.tif"
    dmso = bbbc021_index[bbbc021_index.compound == "DMSO"]
    assert (dmso.moa == "DMSO").all()


def test_bbbc021_missing_files_all_reported():
    meta = real_path("bbbc021_metadata")
    with pytest.raises(PlateIndexError) as err:
        ck.io.from_bbbc021(meta / "BBBC021_v1_image.csv.gz", meta / "BBBC021_v1_moa.csv", "/nonexistent")
    assert len(err.value.problems) == 13_200 * 3
    assert "missing image file" in str(err.value) and "more" in str(err.value)


def test_synthetic_plate_reads_as_bbbc021(small_plate):
    ix = ck.datasets.synthetic_index(small_plate)
    layout = ck.datasets.plate_layout(__import__("tests.conftest", fromlist=["SMALL"]).SMALL)
    assert len(ix) == len(layout)
    assert ix.moa.notna().all()
    assert all(os.path.isfile(p) for p in ix.path_Actin)
    ck.io.validate_index(ix, root=small_plate, check_shapes=True)


def _write_fields(root, n=2, shape=(16, 20)):
    rows = []
    for i in range(n):
        row = {"Plate": "P1", "Well": f"B0{i + 2}", "Site": 1, "Drug": "x", "Dose": 1.0}
        for ch in ("dna", "act"):
            path = root / f"P1_B0{i + 2}_{ch}.tif"
            tifffile.imwrite(path, np.zeros(shape, np.uint16))
            row[ch] = path.name
        rows.append(row)
    return pd.DataFrame(rows)


def test_from_csv_and_errors(tmp_path):
    table = _write_fields(tmp_path)
    cols = {"plate": "Plate", "well": "Well", "site": "Site", "compound": "Drug", "concentration": "Dose"}
    ix = ck.io.from_csv(table, root=tmp_path, channels={"DNA": "dna", "Actin": "act"}, columns=cols)
    assert list(ix.field_id) == ["P1/B02/1", "P1/B03/1"]
    assert ck.io.channels_of(ix) == ["DNA", "Actin"]
    assert (ix.batch == "P1").all() and ix.moa.isna().all()

    with pytest.raises(PlateIndexError, match="missing column 'Dose2'"):
        ck.io.from_csv(table, root=tmp_path, channels={"DNA": "dna"}, columns={**cols, "concentration": "Dose2"})
    dup = pd.concat([table, table])
    with pytest.raises(PlateIndexError, match="duplicate field P1/B02/1"):
        ck.io.from_csv(dup, root=tmp_path, channels={"DNA": "dna"}, columns=cols)
    escaping = table.assign(dna="../outside.tif")
    with pytest.raises(PlateIndexError, match="escapes the image root"):
        ck.io.from_csv(escaping, root=tmp_path, channels={"DNA": "dna"}, columns=cols, check_files=False)
    tifffile.imwrite(tmp_path / "P1_B02_act.tif", np.zeros((8, 8), np.uint16))
    ix = ck.io.from_csv(table, root=tmp_path, channels={"DNA": "dna", "Actin": "act"}, columns=cols)
    with pytest.raises(PlateIndexError, match="channels of different shapes"):
        ck.io.validate_index(ix, check_shapes=True)


def test_from_pattern(tmp_path):
    for well in ("B02", "C03"):
        for site in (1, 2):
            for code in ("1", "2"):
                folder = tmp_path / "Plate7"
                folder.mkdir(exist_ok=True)
                tifffile.imwrite(folder / f"{well}_s{site}_w{code}ABCD.tif", np.zeros((4, 4), np.uint16))
    meta = pd.DataFrame({"plate": ["Plate7"], "well": ["B02"], "compound": ["taxol"], "concentration": [3.0]})
    ix = ck.io.from_pattern(tmp_path, "{plate}/{well}_s{site}_w{channel}*.tif",
                            channels={"1": "DNA", "2": "Tubulin"}, metadata=meta)
    assert len(ix) == 4
    assert ix.set_index("field_id").loc["Plate7/B02/2", "compound"] == "taxol"
    assert ix.path_Tubulin.str.contains("_w2").all()
    (tmp_path / "Plate7" / "C03_s2_w2ABCD.tif").unlink()
    with pytest.raises(PlateIndexError, match="Plate7/C03/2: no Tubulin image"):
        ck.io.from_pattern(tmp_path, "{plate}/{well}_s{site}_w{channel}*.tif", channels={"1": "DNA", "2": "Tubulin"})
    with pytest.raises(PlateIndexError, match="no file"):
        ck.io.from_pattern(tmp_path, "{plate}/{well}_c{channel}.png", channels={"1": "DNA"})
    with pytest.raises(PlateIndexError, match="needs"):
        ck.io.from_pattern(tmp_path, "{plate}/{well}.png", channels={"1": "DNA"})


def test_write_read_index(tmp_path, small_plate):
    ix = ck.datasets.synthetic_index(small_plate)
    path = ck.io.write_index(ix, tmp_path / "index.parquet")
    back = ck.io.read_index(path)
    pd.testing.assert_frame_equal(ix, back)
    assert [p.name for p in tmp_path.iterdir()] == ["index.parquet"]  # no temporary left over


def test_read_field_errors(tmp_path, small_plate):
    ix = ck.datasets.synthetic_index(small_plate)
    field = ck.io.read_field(ix.iloc[0])
    assert field.shape == (3, 256, 320) and field.dtype == np.uint16
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    with pytest.raises(ck.io.ImageReadError, match="corrupt.tif"):
        ck.io.read_image(str(corrupt))

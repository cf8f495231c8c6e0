"""Empty and near-empty fields: decided from the image itself, 0 objects, flagged in the QC table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from cellkit.segment import ClassicalParams, get_segmenter
from cellkit.segment.classical import segment_nuclei
from cellkit.segment.empty import field_is_empty, foreground_evidence

from .conftest import real_path

CHANNELS = ["DNA", "Tubulin", "Actin"]


def _noise_field(background: float, seed: int, shape=(256, 320)) -> np.ndarray:
    """Camera-like noise only: Poisson photons on a background, read noise, an offset, hot pixels."""
    rng = np.random.default_rng(seed)
    planes = []
    for _ in CHANNELS:
        plane = rng.poisson(background, shape) + rng.normal(100, 3, shape)
        plane[tuple(rng.integers(0, s, 20) for s in shape)] += 4000  # hot pixels
        planes.append(np.clip(plane, 0, 65535).astype(np.uint16))
    return np.stack(planes)


@pytest.mark.parametrize("background", [0.5, 20, 400, 5000])
def test_noise_fields_have_no_objects(background):
    segmenter = get_segmenter("classical")
    for seed in range(2):
        field = _noise_field(background, seed)
        result = segmenter.segment_field(field, CHANNELS)
        assert result.n_objects == 0 and result.nuclei.max() == 0 and result.empty, result.notes
        assert "empty field" in result.notes[-1]
    # without the check the classical thresholds find "nuclei" in noise: the check is what decides
    loose = get_segmenter("classical", params=ClassicalParams(min_snr=0))
    assert loose.segment_field(_noise_field(background, 0), CHANNELS).n_objects > 0


def test_a_nucleus_in_noise_is_kept_and_the_noise_is_not():
    field = _noise_field(50, 3).astype(np.float64)
    yy, xx = np.mgrid[:256, :320]
    field[0] += 400 * ((yy - 120) ** 2 + (xx - 160) ** 2 < 8 ** 2)
    field[1:] += 150 * ((yy - 120) ** 2 + (xx - 160) ** 2 < 20 ** 2)
    result = get_segmenter("classical").segment_field(field.astype(np.uint16), CHANNELS)
    assert result.n_objects == 1 and not result.empty
    assert result.nuclei[120, 160] == 1


def _real_field(name):
    folder = real_path(name)
    return tifffile.imread(sorted(folder.glob("*.tif"))[0])


def test_real_empty_regions_are_empty():
    """Windows of the real BBBC021 DAPI field with no nucleus (by the full-field segmentation, 8 px margin)."""
    dapi = _real_field("bbbc021_images")
    reference = segment_nuclei(dapi, ClassicalParams(min_snr=0))
    free = ~ndi.binary_dilation(reference > 0, iterations=8)
    tried = 0
    for size in (96, 64):
        inside = ndi.uniform_filter(free.astype(float), size, mode="constant") > 0.9999
        ys, xs = np.nonzero(inside[size // 2: -size // 2, size // 2: -size // 2])
        for i in np.linspace(0, len(ys) - 1, 3).astype(int):
            crop = dapi[ys[i]: ys[i] + size, xs[i]: xs[i] + size]
            assert crop.shape == (size, size)
            assert field_is_empty(crop)[0]
            assert segment_nuclei(crop).max() == 0
            assert segment_nuclei(crop, ClassicalParams(min_snr=0)).max() > 0  # the old behaviour
            tried += 1
    assert tried == 6


def test_real_fields_segment_as_before():
    """The check changes nothing on real fields with nuclei (a quarter of the BBBC021 DAPI field, the
    BBBC039 / IXM image), default settings."""
    images = [_real_field("bbbc021_images")[:512, :640], tifffile.imread(sorted(
        real_path("cellprofiler_examples", "bbbc039_IXMtest_image").glob("*.tif"))[0])]
    for image in images:
        assert not field_is_empty(image)[0]
        labels = segment_nuclei(image)
        assert labels.max() > 50
        np.testing.assert_array_equal(labels, segment_nuclei(image, ClassicalParams(min_snr=0)))


def test_evidence_is_in_units_of_the_noise():
    rng = np.random.default_rng(0)
    for sigma in (1.0, 30.0):
        evidence = foreground_evidence(rng.normal(1000, sigma, (400, 400)).astype(np.float32))
        assert 0.9 < evidence.std() < 1.15 and abs(float(np.median(evidence))) < 0.2


def test_empty_field_flag_reaches_the_qc_table_and_store(tmp_path):
    import pandas as pd
    import zarr

    from cellkit.segment import segment_plate

    rows = []
    for k, field in enumerate([_noise_field(30, 9)]):
        paths = {}
        for c, name in enumerate(CHANNELS):
            paths[f"path_{name}"] = str(tmp_path / f"f{k}_{name}.tif")
            tifffile.imwrite(paths[f"path_{name}"], field[c])
        rows.append({"field_id": f"P/A0{k}/1", "plate": "P", "well": f"A0{k}", "site": 1, **paths})
    qc = segment_plate(pd.DataFrame(rows), tmp_path / "labels.zarr", get_segmenter("classical"))
    assert qc["empty"].tolist() == [True] and qc["n_cells"].tolist() == [0] and qc["status"].tolist() == ["ok"]
    assert zarr.open_group(str(tmp_path / "labels.zarr" / "P/A00/1"), mode="r").attrs["empty"] is True
    assert pd.read_csv(Path(str(tmp_path / "labels.qc.csv")))["empty"].tolist() == [True]


def test_cellpose_backend_skips_empty_fields(monkeypatch):
    """Noise-only images never reach the network and get 0 nuclei; the others are run."""
    from cellkit.segment.backends import CellposeSegmenter

    model = Path(__file__).resolve().parents[1] / "models" / "dsb2018_train_nuclei_cellkit.cp"
    segmenter = CellposeSegmenter(model=str(model), cell_model=None, gpu=False)
    seen = []

    def fake_run(path, images, diameter, channels):  # records what would go to Cellpose
        seen.extend(images)
        return [np.zeros(im.shape, np.uint32) for im in images]

    monkeypatch.setattr(segmenter, "_run", fake_run)
    nucleus = _noise_field(50, 5)[0].astype(np.float64)
    yy, xx = np.mgrid[:256, :320]
    nucleus += 400 * ((yy - 100) ** 2 + (xx - 100) ** 2 < 8 ** 2)
    out = segmenter.segment_nuclei([_noise_field(50, 4)[0], nucleus.astype(np.uint16)])
    assert len(seen) == 1 and seen[0][100, 100] > 300
    assert all(o.max() == 0 and o.shape == (256, 320) for o in out)

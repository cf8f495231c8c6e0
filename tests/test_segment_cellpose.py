"""Cellpose backend: weights from the local cache only, training a tiny model, using it."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.segment import (CellposeSegmenter, WeightsNotFoundError, get_segmenter, resolve_model,
                             weights_available)
from cellkit.segment.train import load_image_mask_pairs, split_holdout

from .conftest import real_path

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cellpose_cache"))
    yield
    torch.set_num_threads(threads)


def test_missing_weights_are_a_clear_error_and_auto_falls_back(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        get_segmenter("cellpose")
    message = str(err.value)
    assert "nucleitorch_0" in message and "CELLPOSE_LOCAL_MODELS_PATH" in message and "classical" in message
    with pytest.raises(WeightsNotFoundError, match="no Cellpose model at"):
        resolve_model(tmp_path / "missing.model")
    with pytest.warns(UserWarning, match="using the classical backend"):
        assert get_segmenter("auto").name == "classical"
    # a cached file is found by name, without any download
    cache = tmp_path / "cellpose_cache"
    cache.mkdir()
    (cache / "nucleitorch_0").write_bytes(b"weights")
    assert weights_available("nuclei") and resolve_model("nuclei") == cache / "nucleitorch_0"
    assert not weights_available("cyto3")


def test_training_pairs_are_checked(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    tifffile.imwrite(tmp_path / "im" / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "im" / "b.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "mk" / "a.tif", np.zeros((16, 32), np.uint16))
    with pytest.raises(ValueError, match="2 problem") as err:
        load_image_mask_pairs(tmp_path / "im", tmp_path / "mk")
    assert "b.tif: no mask" in str(err.value) and "differ in shape" in str(err.value)
    train, val = split_holdout(10, 0.2, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 10
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(1, 0.2, seed=0)


def test_train_tiny_model_then_use_it(tmp_path):
    dsb = real_path("dsb2018_stage1_test_fluo")
    names, images, masks = load_image_mask_pairs(dsb / "images", dsb / "masks")
    # three small crops keep the CPU training to seconds; the model is not meant to be accurate
    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    for k in range(3):
        tifffile.imwrite(tmp_path / "im" / f"{k}.tif", images[k][:128, :128])
        tifffile.imwrite(tmp_path / "mk" / f"{k}.tif", masks[k][:128, :128].astype(np.uint16))
    model = tmp_path / "nuclei.cp"
    result = runner.invoke(app, ["train-segmenter", str(tmp_path / "im"), str(tmp_path / "mk"), "--out", str(model),
                                 "--epochs", "1", "--batch-size", "2", "--patch-size", "64", "--cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["validation_ap@0.5"] <= 1.0 and model.exists()
    report = json.loads((tmp_path / "nuclei.cp.json").read_text())
    assert len(report["validation_names"]) == 1 and not set(report["validation_names"]) & set(report["train_names"])

    # the saved model loads in the Cellpose backend and segments fields and single images
    seg = get_segmenter("cellpose", model=str(model), cell_model=None, gpu=False)
    assert isinstance(seg, CellposeSegmenter)
    field = np.stack([images[0][:128, :128]] * 3).astype(np.uint16)
    out = seg.segment_field(field, ["DNA", "Tubulin", "Actin"])
    assert out.nuclei.shape == (128, 128) and out.cells.dtype == np.uint32
    np.testing.assert_array_equal(np.unique(out.nuclei), np.unique(out.cells))
    result = runner.invoke(app, ["score-segmentation", "--images", str(tmp_path / "im"), "--masks",
                                 str(tmp_path / "mk"), "--backend", "cellpose", "--model", str(model), "--cpu",
                                 "--out", str(tmp_path / "score.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "score.json").read_text())
    assert scores["pooled"]["n_images"] == 3 and scores["segmenter"]["model_path"] == str(model)

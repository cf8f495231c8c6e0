import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import cellkit as ck
from cellkit.datasets import SyntheticConfig, phenotype, render_field
from cellkit.datasets.phenotypes import MOA_EFFECTS


def _render(moa=None, seed=0, shape=(512, 640)):
    params = phenotype(MOA_EFFECTS.get(moa), 1.0 if moa else 0.0)
    return render_field(params, shape, rng=np.random.default_rng(seed))


def test_ground_truth_consistent_with_images():
    images, nuclei, cells = _render(seed=1)
    assert images.shape == (3, 512, 640) and images.dtype == np.uint16
    assert nuclei.dtype == np.uint32 and cells.dtype == np.uint32
    ids = np.unique(cells)[1:]
    assert len(ids) > 10
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    np.testing.assert_array_equal(np.unique(nuclei)[1:], ids)  # every cell has its nucleus
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])  # nucleus k lies inside cell k
    # each nucleus and each cell is one connected piece
    for lab in (nuclei, cells):
        for i, sl in enumerate(ndi.find_objects(lab), 1):
            assert ndi.label(lab[sl] == i)[1] == 1
    dna = images[0].astype(float)
    assert dna[nuclei > 0].mean() > 5 * dna[cells == 0].mean()
    for c in (1, 2):
        assert images[c][cells > 0].mean() > 2 * images[c][cells == 0].mean()
    # touching neighbours exist
    assert np.any((cells[1:] != cells[:-1]) & (cells[1:] > 0) & (cells[:-1] > 0))


def test_deterministic():
    a = _render(seed=3)
    b = _render(seed=3)
    c = _render(seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def _nuclear_areas(moa, seeds=range(3)):
    return np.concatenate([np.bincount(_render(moa, s)[1].ravel())[1:] for s in seeds])


def test_phenotypes_measurable():
    dmso = _nuclear_areas(None)
    assert np.median(_nuclear_areas("DNA damage")) > 1.4 * np.median(dmso)

    def fibre_texture(moa):
        images, _, cells = _render(moa, 5)
        tub = images[1].astype(float)
        high = tub - ndi.gaussian_filter(tub, 3)
        return high[ndi.binary_erosion(cells > 0, iterations=3)].std() / tub[cells > 0].mean()

    assert fibre_texture("Microtubule destabilizers") < 0.6 * fibre_texture(None)
    assert fibre_texture("Microtubule stabilizers") > 1.2 * fibre_texture(None)

    def cell_area(moa):
        return np.median(np.concatenate([np.bincount(_render(moa, s)[2].ravel())[1:] for s in range(3)]))

    assert cell_area("Protein synthesis") < 0.7 * cell_area(None)

    def mitotic_fraction(moa):
        images, nuclei, _ = _render(moa, 2)
        mean_dna = ndi.mean(images[0], nuclei, np.arange(1, nuclei.max() + 1))
        return np.mean(mean_dna > 1.6 * np.median(_render(None, 2)[0][0][_render(None, 2)[1] > 0]))

    assert mitotic_fraction("Eg5 inhibitors") > mitotic_fraction(None) + 0.2


def test_layout_batches_and_controls():
    config = SyntheticConfig(n_batches=3, plates_per_batch=2, compounds_per_moa=3, n_concentrations=3)
    layout = ck.datasets.plate_layout(config)
    assert (layout.groupby("plate").compound.apply(lambda c: (c == "DMSO").sum()) == config.dmso_wells).all()
    treated = layout[layout.compound != "DMSO"]
    # each compound sits in one batch; the compounds of one MOA are in different batches
    assert (treated.groupby("compound").batch.nunique() == 1).all()
    assert (treated.groupby("moa").batch.nunique() == 3).all()
    assert treated.groupby("compound").concentration.nunique().eq(3).all()
    assert not layout.duplicated(["plate", "well", "site"]).any()
    with pytest.raises(ValueError, match="n_moas"):
        SyntheticConfig(n_moas=13).validate()


def test_written_plate_matches_render(small_plate):
    from .conftest import SMALL

    ix = ck.datasets.synthetic_index(small_plate)
    layout = ck.datasets.plate_layout(SMALL)
    row = ix.iloc[3]
    field = layout[(layout.plate == row.plate) & (layout.well == row.well)].iloc[0]
    images, nuclei, cells = ck.datasets.render_layout_field(SMALL, field)
    np.testing.assert_array_equal(ck.io.read_field(row), images)
    gt = ck.datasets.ground_truth_paths(small_plate, row.plate, row.well, row.site)
    np.testing.assert_array_equal(tifffile.imread(gt["nuclei"]), nuclei)
    np.testing.assert_array_equal(tifffile.imread(gt["cells"]), cells)
    # batch effects: the two batches' DMSO fields differ in mean intensity
    dmso = ix[ix.compound == "DMSO"]
    means = dmso.groupby("batch").path_Tubulin.apply(lambda paths: np.mean([ck.io.read_image(p).mean() for p in paths]))
    assert abs(means.iloc[0] / means.iloc[1] - 1) > 0.03


def test_existing_folder_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ck.datasets.write_synthetic_plate(tmp_path / "x", SyntheticConfig(n_moas=1, height=64, width=64))
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_batch_effects_scale_and_spare_controls():
    from cellkit.datasets.synthetic import _plate_effects, batch_phenotype

    effect = {"cell_radius": 0.3, "tubulin": -0.5}
    off = _plate_effects(SyntheticConfig(batch_effect=0, height=64, width=64), 0, "P1")
    assert off["focus"] == 1.0 and np.all(off["gains"] == 1) and np.all(off["illumination"] == 1)
    assert batch_phenotype(effect, 0.7, off) == phenotype(effect, 0.7)  # no batch effects: the plain phenotype
    on = [_plate_effects(SyntheticConfig(height=64, width=64), b, f"P{b}") for b in (0, 1)]
    dmso = [batch_phenotype({}, 0.0, e) for e in on]
    assert dmso[0]["cell_radius"] != dmso[1]["cell_radius"]  # cell state differs between batches, controls too
    treated = batch_phenotype(effect, 0.7, on[0])
    # the batch's shared response to any compound reaches treated cells only, in proportion to the dose
    dose = min(1.0, 0.7 * on[0]["sensitivity"])
    assert np.log(treated["actin"]) == pytest.approx(dose * on[0]["response"]["actin"])
    assert dmso[0]["actin"] == 1.0
    # each batch scales every compound's effect on a parameter by its own gain (a batch x compound interaction)
    assert on[0]["gain"]["tubulin"] != on[1]["gain"]["tubulin"]
    plain = {**on[0], "sensitivity": 1.0, "response": {}, "state": {}}
    assert batch_phenotype(effect, 0.7, plain) == phenotype({k: v * on[0]["gain"][k] for k, v in effect.items()}, 0.7)
    no_gain = _plate_effects(SyntheticConfig(batch_gain=0, height=64, width=64), 0, "P0")
    assert set(no_gain["gain"].values()) == {1.0} and no_gain["sensitivity"] == on[0]["sensitivity"]
    with pytest.raises(ValueError, match="batch_gain must be in 0..1"):
        SyntheticConfig(batch_gain=2).validate()

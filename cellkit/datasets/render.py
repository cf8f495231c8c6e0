"""Render one synthetic field: clustered cells with nuclei, three stains, optics and noise."""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from skimage import measure

CHANNELS = ["DNA", "Tubulin", "Actin"]
# Peak signal above background (counts) and background offsets, per channel, at gain 1.
SIGNAL = np.array([4500.0, 1800.0, 2200.0], dtype=np.float32)
BACKGROUND = np.array([220.0, 300.0, 260.0], dtype=np.float32)
READ_NOISE = 12.0
N_ORIENTATIONS = 4


def _place_centres(rng, shape, n, params):
    """Cell centres in clusters (colonies), kept apart so that nuclei do not overlap."""
    h, w = shape
    r_cell, r_nuc = params["cell_radius"], params["nucleus_radius"]
    n_colonies = max(1, int(round(n / 7)))
    colonies = rng.uniform([0, 0], [h, w], size=(n_colonies, 2))
    spread = 1.6 * r_cell * params["spread"]
    min_dist = 2.6 * r_nuc
    centres = []
    for _ in range(n * 30):
        if len(centres) == n:
            break
        c = colonies[rng.integers(n_colonies)] + rng.normal(0, spread, 2)
        if not (0 <= c[0] < h and 0 <= c[1] < w):
            continue
        if centres and np.min(np.hypot(*(np.asarray(centres) - c).T)) < min_dist:
            continue
        centres.append(c)
    return np.asarray(centres).reshape(-1, 2)


def _shape_distance(yy, xx, centre, radius, ratio, angle, harmonics):
    """Normalised distance (1 on the boundary) of pixels to a noisy ellipse.

    The boundary radius is ``1 + sum(a * cos(k * phi + p))`` over ``harmonics`` (k, a, p);
    ``cos(k phi + p)`` is the real part of ``z**k * exp(ip)`` with ``z = exp(i phi)``.
    """
    dy, dx = yy - centre[0], xx - centre[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / (radius * np.sqrt(ratio))
    v = (-dx * sa + dy * ca) / (radius / np.sqrt(ratio))
    rho = np.hypot(u, v)
    z = (u + 1j * v).astype(np.complex64) / (rho + 1e-6)
    boundary = np.ones_like(rho)
    power, order = np.ones_like(z), 0
    for k, a, p in harmonics:
        while order < k:
            power, order = power * z, order + 1
        boundary += a * (power * np.complex64(np.exp(1j * p))).real
    return rho / boundary


def _harmonics(rng, amplitude, orders=(2, 3, 5)):
    return [(k, amplitude * rng.uniform(0.3, 1.0) / k**0.5, rng.uniform(0, 2 * np.pi)) for k in orders]


def _cell_table(rng, n, params):
    """Per-cell parameters, shape (n,) each, with cell-to-cell variability."""
    ln = lambda sd: np.exp(rng.normal(0, sd, n))  # noqa: E731
    mitotic = rng.random(n) < params["mitotic"]
    lobed = ~mitotic & (rng.random(n) < params["lobed"])
    puncta = rng.random(n) < params["puncta"]
    cell_r = params["cell_radius"] * ln(0.15)
    nuc_r = params["nucleus_radius"] * ln(0.12)
    ratio = 1.0 + (params["elongation"] - 1.0) * rng.uniform(0.4, 1.6, n)
    ratio = np.where(mitotic, 1.0, ratio)
    cell_r = np.where(mitotic, 0.75 * cell_r, cell_r)
    nuc_r = np.where(mitotic, 0.65 * nuc_r, np.where(lobed, 1.45 * nuc_r, nuc_r))
    nuc_r = np.minimum(nuc_r, 0.7 * cell_r)
    return {
        "cell_r": cell_r, "nuc_r": nuc_r, "ratio": ratio,
        "angle": rng.uniform(0, np.pi, n),
        "dna": params["dna"] * ln(0.12) * np.where(mitotic, 2.2, np.where(lobed, 1.3, 1.0)),
        "tubulin": params["tubulin"] * ln(0.15) * np.where(mitotic, 1.3, 1.0),
        "actin": params["actin"] * ln(0.15),
        "orientation": rng.integers(N_ORIENTATIONS, size=n),
        "mitotic": mitotic, "lobed": lobed, "puncta": puncta,
    }


def _window(centre, reach, shape):
    """Slices of a square window of half-size ``reach`` around ``centre``, clipped to the field,
    and its pixel coordinates (float32)."""
    y0, y1 = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 2, shape[0])
    x0, x1 = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 2, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), yy, xx


def _draw_labels(rng, shape, centres, cells):
    """Weighted-Voronoi cells (touching neighbours) and nuclei inside them, uint32 (H, W) each,
    plus each nucleus pixel's depth (1 at its centre, 0 at its edge), float32 (H, W)."""
    cell_lab = np.zeros(shape, np.uint32)
    best = np.ones(shape, np.float32)
    nuclei = []
    for i, c in enumerate(centres):
        win, yy, xx = _window(c, cells["cell_r"][i] * np.sqrt(cells["ratio"][i]) * 1.35, shape)
        d = _shape_distance(yy, xx, c, cells["cell_r"][i], cells["ratio"][i], cells["angle"][i],
                            _harmonics(rng, 0.06 if cells["mitotic"][i] else 0.14))
        take = d < best[win]
        best[win][take] = d[take]
        cell_lab[win][take] = i + 1
        nc = c + rng.normal(0, 0.12 * cells["nuc_r"][i], 2)
        nuc_ratio = 1.0 + 0.35 * (cells["ratio"][i] - 1)
        nwin, nyy, nxx = _window(nc, cells["nuc_r"][i] * np.sqrt(nuc_ratio) * 1.3, shape)
        dn = _shape_distance(nyy, nxx, nc, cells["nuc_r"][i], nuc_ratio, cells["angle"][i],
                             _harmonics(rng, 0.16 if cells["lobed"][i] else 0.04, (2, 3, 4)))
        nuclei.append((nwin, dn))
    nuc_lab = np.zeros(shape, np.uint32)
    nuc_depth = np.zeros(shape, np.float32)
    for i, (win, dn) in enumerate(nuclei):
        inside = (dn < 1.0) & (cell_lab[win] == i + 1)
        nuc_lab[win][inside] = i + 1
        nuc_depth[win][inside] = 1.0 - dn[inside]
    return cell_lab, nuc_lab, nuc_depth


def _clean_labels(cell_lab, nuc_lab, n, min_nucleus_px=25):
    """Keep one connected piece per cell (the one holding its nucleus) and the largest piece of
    each nucleus; drop cells whose nucleus is under ``min_nucleus_px``; number cells 1..K in
    raster order of their first pixel. Returns new labels and ``new_ids`` (old id -> new id)."""
    nuc_pieces = measure.label(nuc_lab, connectivity=1)
    piece_area = np.bincount(nuc_pieces.ravel())
    piece_owner = np.zeros(len(piece_area), np.int64)
    piece_owner[nuc_pieces.ravel()] = nuc_lab.ravel()
    biggest = np.zeros(n + 1, np.int64)
    for piece in np.argsort(piece_area[1:]) + 1:  # ascending: the largest piece wins
        biggest[piece_owner[piece]] = piece
    nuc_lab = np.where(biggest[nuc_lab] == nuc_pieces, nuc_lab, 0).astype(np.uint32)
    cell_pieces = measure.label(cell_lab, connectivity=1)
    holds_nucleus = np.zeros(int(cell_pieces.max()) + 1, bool)
    holds_nucleus[cell_pieces[nuc_lab > 0]] = True
    cell_lab = np.where(holds_nucleus[cell_pieces], cell_lab, 0).astype(np.uint32)
    keep = np.bincount(nuc_lab.ravel(), minlength=n + 1) >= min_nucleus_px
    keep[0] = False
    cell_lab = np.where(keep[cell_lab], cell_lab, 0).astype(np.uint32)
    nuc_lab = np.where(keep[nuc_lab], nuc_lab, 0).astype(np.uint32)
    ids, first = np.unique(cell_lab.ravel(), return_index=True)
    ids, first = ids[ids > 0], first[ids > 0]
    new_ids = np.zeros(n + 1, np.uint32)
    new_ids[ids[np.argsort(first)]] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    return new_ids[cell_lab], new_ids[nuc_lab], new_ids


TILE = 256


@functools.lru_cache(maxsize=1)
def _texture_tiles():
    """Periodic noise tiles, built once: filament textures in ``N_ORIENTATIONS`` directions and
    a granular chromatin texture, (N_ORIENTATIONS + 1, TILE, TILE) float32, unit variance.
    FFT-filtered noise is periodic, so the tiles repeat seamlessly across a field."""
    rng = np.random.default_rng(20240601)
    spectrum = sfft.rfft2(rng.standard_normal((TILE, TILE), dtype=np.float32))
    fy = sfft.fftfreq(TILE).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(TILE).astype(np.float32)[None, :]
    filters = []
    for k in range(N_ORIENTATIONS):  # long along the fibre, narrow across it
        a = np.pi * k / N_ORIENTATIONS
        along, across = fx * np.cos(a) + fy * np.sin(a), -fx * np.sin(a) + fy * np.cos(a)
        filters.append(np.exp(-2 * np.pi**2 * ((9.0 * along) ** 2 + (0.8 * across) ** 2)))
    filters.append(np.exp(-2 * np.pi**2 * 1.2**2 * (fx**2 + fy**2)))  # isotropic, sigma 1.2 px
    tiles = np.stack([sfft.irfft2(spectrum * f, s=(TILE, TILE)) for f in filters]).astype(np.float32)
    return tiles / tiles.std(axis=(1, 2), keepdims=True)


def _texture(rng, shape, which):
    """Texture planes ``which`` (indices into `_texture_tiles`) covering ``shape`` at a random offset."""
    tiles = _texture_tiles()[which]
    dy, dx = rng.integers(TILE, size=2)
    reps = (1, -(-(shape[0] + dy) // TILE), -(-(shape[1] + dx) // TILE))
    return np.tile(tiles, reps)[:, dy:dy + shape[0], dx:dx + shape[1]]


def illumination_field(shape, rng, strength=0.3):
    """Smooth multiplicative vignetting, (H, W) float32, max 1, centre slightly off the middle."""
    h, w = shape
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    yy, xx = np.ogrid[:h, :w]
    r2 = ((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2
    return (1.0 - strength * r2 / r2.max()).astype(np.float32)


def render_field(params: dict, shape=(1024, 1280), *, rng: np.random.Generator,
                 gains=(1.0, 1.0, 1.0), illumination=None, focus: float = 1.0, background=(1.0, 1.0, 1.0)):
    """Render one field.

    Parameters
    ----------
    params
        A phenotype (see `cellkit.datasets.phenotypes.phenotype`).
    shape
        Field shape (H, W).
    rng
        Random generator; the field is a deterministic function of its state.
    gains
        Per-channel multiplicative gain (plate and batch effects), length 3.
    illumination
        (3, H, W) or (H, W) multiplicative illumination; default: flat.
    focus
        Sigma (px) of the optical blur (the point spread function); larger = more out of focus.
    background
        Per-channel multiplier of the background level (stray light, medium), length 3.

    Returns
    -------
    images : (3, H, W) uint16, channels DNA, Tubulin, Actin
    nuclei : (H, W) uint32, nucleus k inside cell k
    cells : (H, W) uint32, labels 1..N in raster order of their first pixel
    """
    shape = tuple(int(s) for s in shape)
    mean_area = np.pi * params["cell_radius"] ** 2
    n = rng.poisson(max(1.0, 0.25 * shape[0] * shape[1] / mean_area * params["density"]))  # ~115 cells per 1024x1280
    centres = _place_centres(rng, shape, n, params)
    cells = _cell_table(rng, len(centres), params)
    cell_lab, nuc_lab, nuc_depth = _draw_labels(rng, shape, centres, cells)
    cell_lab, nuc_lab, new_ids = _clean_labels(cell_lab, nuc_lab, len(centres))
    kept = new_ids[1:] > 0

    def per_pixel(values, labels):
        """Per-cell values (indexed by the original cell order) painted on a label image."""
        table = np.zeros(int(new_ids.max()) + 1, np.float32)
        table[new_ids[1:][kept]] = np.asarray(values, np.float32)[kept]
        return table[labels]

    inside_cell = cell_lab > 0
    inside_nuc = nuc_lab > 0
    # DNA: bright nuclei, domed profile, chromatin texture; mitotic cells condensed and bright.
    chromatin = _texture(rng, shape, [N_ORIENTATIONS])[0]
    dna = per_pixel(cells["dna"], nuc_lab) * (0.55 + 0.45 * np.sqrt(nuc_depth))
    dna *= 1.0 + params["dna_texture"] * chromatin
    # Tubulin: cytoplasmic, brighter around the nucleus, filaments in one of N orientations.
    fibres = _texture(rng, shape, list(range(N_ORIENTATIONS)))
    orient = per_pixel(cells["orientation"].astype(np.float32), cell_lab).astype(np.int64)
    fibre = np.take_along_axis(fibres, orient[None], 0)[0]
    perinuclear = 1.0 + 0.6 * ndi.uniform_filter(inside_nuc.astype(np.float32), 15)
    tub = per_pixel(cells["tubulin"], cell_lab) * perinuclear
    tub *= np.clip(1.0 + params["tubulin_fibre"] * fibre, 0.05, None)
    # Actin: cortical rim, diffuse body, aggregates in cells with puncta.
    cortex = np.minimum(ndi.gaussian_filter((_boundaries(cell_lab) | (inside_cell & ~ndi.binary_erosion(
        inside_cell))).astype(np.float32), 2.0) * 2.5, 1.0)
    act = per_pixel(cells["actin"], cell_lab) * (0.45 + params["actin_cortex"] * cortex)
    n_spots = rng.poisson(0.004 * shape[0] * shape[1])
    spots = np.zeros(shape, bool)
    spots[rng.integers(shape[0], size=n_spots), rng.integers(shape[1], size=n_spots)] = True
    spots &= per_pixel(cells["puncta"].astype(np.float32), cell_lab) > 0
    act += 6.0 * ndi.gaussian_filter(spots.astype(np.float32), 1.5) * 2 * np.pi * 1.5**2 * per_pixel(
        cells["actin"], cell_lab) * 0.5
    act *= inside_cell
    tub *= inside_cell

    flat = np.ones(shape, np.float32) if illumination is None else np.asarray(illumination, np.float32)
    images = np.empty((3,) + shape, np.uint16)
    for c, plane in enumerate((dna, tub, act)):
        plane = ndi.gaussian_filter(np.maximum(plane, 0).astype(np.float32), float(focus), truncate=2.5)
        illum = flat if flat.ndim == 2 else flat[c]
        signal = plane * SIGNAL[c] * gains[c] * illum + BACKGROUND[c] * background[c] * gains[c] * illum
        # shot noise (variance = signal) and read noise in one Gaussian draw
        signal += np.sqrt(signal + READ_NOISE**2) * rng.standard_normal(shape, dtype=np.float32)
        images[c] = np.clip(signal, 0, 65535).astype(np.uint16)
    return images, nuc_lab, cell_lab


def _boundaries(labels):
    """Pixels whose 4-neighbour has another label (inner boundaries between touching cells too)."""
    b = np.zeros(labels.shape, bool)
    dy = labels[1:, :] != labels[:-1, :]
    dx = labels[:, 1:] != labels[:, :-1]
    b[1:, :] |= dy
    b[:-1, :] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b & (labels > 0)

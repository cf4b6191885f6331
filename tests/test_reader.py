import time

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.io import MemoryFile

from scarmon.grid import SiteGrid
from scarmon.ingest.reader import RasterioReader, ReadError, source_window

EPSG = 32647
T = Affine(10, 0, 400000, 0, -10, 3500000)


def write_cog(path, size=2048, block=256):
    data = (np.arange(size * size, dtype=np.uint32).reshape(size, size) % 50000 + 1).astype(np.uint16)
    profile = dict(
        driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs=f"EPSG:{EPSG}", transform=T, nodata=0
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
        with mem.open() as src:
            rasterio.shutil.copy(src, str(path), driver="COG", compress="DEFLATE", blocksize=block)
    return data


def block_bytes(path, grid):
    """Physical floor: bytes of the blocks that intersect the grid's bounds."""
    with rasterio.open(path) as src:
        win = source_window(src.crs, src.transform, src.width, src.height, grid)
        total = 0
        for (r, c), bw in src.block_windows(1):
            if bw.intersection(win) if _overlaps(bw, win) else False:
                total += src.block_size(1, r, c)
        return total


def _overlaps(a, b):
    return (
        a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
        and a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
    )


def test_reads_only_the_window(tmp_path):
    path = tmp_path / "b04.tif"
    data = write_cog(path)
    grid = SiteGrid(EPSG, 2.0, 405000, 3495000, 500, 500)  # 1 km inside the 20 km tile
    reader = RasterioReader()
    win = reader.read_window(str(path), grid)
    assert win.data.shape == (104, 104)  # 100 px + 2 px margin each side
    assert win.transform.c == 405000 - 20 and win.transform.f == 3495000 + 20
    assert np.array_equal(win.data, data[498:602, 498:602])
    floor = block_bytes(path, grid)
    assert reader.stats.bytes_read >= floor
    assert reader.stats.bytes_read < floor + 64 * 1024  # header/IFD only on top; never the whole tile
    assert reader.stats.bytes_read < path.stat().st_size / 5


def test_no_overlap_is_none(tmp_path):
    path = tmp_path / "b.tif"
    write_cog(path, size=512)
    assert RasterioReader().read_window(str(path), SiteGrid(EPSG, 2.0, 600000, 3495000, 50, 50)) is None


def test_corrupt_and_missing_files_raise_read_error(tmp_path):
    path = tmp_path / "b.tif"
    write_cog(path, size=1024)
    raw = path.read_bytes()
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(raw[: len(raw) // 3])
    grid = SiteGrid(EPSG, 2.0, 406000, 3494000, 500, 500)
    with pytest.raises(ReadError, match="trunc.tif"):
        RasterioReader().read_window(str(trunc), grid)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all" * 100)
    with pytest.raises(ReadError, match="junk.tif"):
        RasterioReader().read_window(str(junk), grid)
    with pytest.raises(ReadError, match="nope.tif"):
        RasterioReader().read_window(str(tmp_path / "nope.tif"), grid)


def test_signing_only_touches_planetary_computer_blobs():
    from scarmon.ingest.reader import sign_href

    assert sign_href("/data/x.tif") == "/data/x.tif"
    assert sign_href("http://127.0.0.1:9000/x.tif") == "http://127.0.0.1:9000/x.tif"


# --- Resampling without GDAL, and reading only what the mosaic still needs ------------------------------------------

from rasterio.warp import Resampling, reproject  # noqa: E402

from scarmon.ingest.loading import bilinear_to_grid, load_ndvi, nearest_to_grid, numpy_path, read_scl  # noqa: E402
from scarmon.ingest.reader import Window2D  # noqa: E402
from scarmon.ingest.scenes import Scene  # noqa: E402


def gdal_bilinear(win, grid):
    out = np.full(win.data.shape[:-2] + grid.shape, np.nan, np.float32)
    reproject(
        win.data,
        out,
        src_transform=win.transform,
        src_crs=win.crs,
        src_nodata=np.nan,
        dst_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        resampling=Resampling.bilinear,
    )
    return out


@pytest.mark.parametrize(
    "res, x0, y0",
    [(2.0, 400020.0, 3499500.0), (2.0, 400006.0, 3499494.0), (5.0, 400100.0, 3499800.0), (3.0, 400013.0, 3499411.0)],
)
def test_numpy_bilinear_equals_gdal(res, x0, y0):
    rng = np.random.default_rng(1)
    data = rng.uniform(0.0, 0.5, (2, 60, 70)).astype(np.float32)
    data[:, 20:24, 30:33] = np.nan  # a no-data hole: GDAL drops those taps and renormalises
    data[:, :, :5] = np.nan  # a footprint edge
    win = Window2D(data, T, f"EPSG:{EPSG}")
    grid = SiteGrid(EPSG, res, x0, y0, 200, 180)
    assert numpy_path(win, grid)
    ours, ref = bilinear_to_grid(win, grid), gdal_bilinear(win, grid)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    assert np.nanmax(np.abs(ours - ref)) < 1e-6


def test_numpy_nearest_places_scl_like_gdal():
    scl = np.random.default_rng(2).integers(0, 12, (40, 50)).astype(np.uint8)
    win = Window2D(scl, Affine(20, 0, 400000, 0, -20, 3500000), f"EPSG:{EPSG}")
    grid = SiteGrid(EPSG, 20.0, 400100.0, 3499900.0, 60, 30)  # partly outside the window
    ref = np.zeros(grid.shape, np.uint8)
    reproject(
        scl,
        ref,
        src_transform=win.transform,
        src_crs=win.crs,
        src_nodata=0,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    assert np.array_equal(nearest_to_grid(win, grid, 0), ref)


class ArrayReader:
    """A Reader over in-memory rasters keyed by href; records every window asked for."""

    def __init__(self, rasters):
        self.rasters, self.calls = rasters, []

    def read_window(self, href, grid):
        self.calls.append((href, grid))
        data, transform = self.rasters[href]
        win = source_window(f"EPSG:{EPSG}", transform, data.shape[1], data.shape[0], grid)
        if win is None:
            return None
        r, c = int(win.row_off), int(win.col_off)
        return Window2D(
            data[r : r + int(win.height), c : c + int(win.width)], transform @ Affine.translation(c, r), f"EPSG:{EPSG}"
        )


def two_tiles(first_covers: bool):
    """Two items of one pass over a 400 m × 400 m grid; the first covers it all, or only its western 60 %."""
    t10, t20 = Affine(10, 0, 400000, 0, -10, 3500000), Affine(20, 0, 400000, 0, -20, 3500000)
    rasters, items = {}, []
    for name, value in (("A", 1500), ("B", 1600)):
        red = np.full((60, 60), value, np.uint16)
        nir = np.full((60, 60), value + 2000, np.uint16)
        scl = np.full((30, 30), 4, np.uint8)
        if name == "A" and not first_covers:
            red[:, 34:] = nir[:, 34:] = 0
            scl[:, 17:] = 0
        for key, arr, t in (("B04", red, t10), ("B08", nir, t10), ("SCL", scl, t20)):
            rasters[f"{name}/{key}"] = (arr, t)
        items.append(
            {
                "id": name,
                "properties": {"datetime": "2024-01-01T00:00:00Z", "s2:processing_baseline": "02.14"},
                "assets": {k: {"href": f"{name}/{k}"} for k in ("B04", "B08", "SCL")},
            }
        )
    grid = SiteGrid(EPSG, 2.0, 400100.0, 3499900.0, 200, 200)
    return Scene("S2A_20240101_R001", "2024-01-01T00:00:00Z", tuple(items)), grid, ArrayReader(rasters)


def test_a_tile_that_covers_the_grid_spares_the_others():
    scene, grid, reader = two_tiles(first_covers=True)
    scl, covering = read_scl(scene, grid, reader)
    out = load_ndvi(scene, covering, scl, grid, reader)
    assert [i["id"] for i in covering] == ["A"]
    assert {href for href, _ in reader.calls} == {"A/SCL", "A/B04", "A/B08"}  # nothing of B, not even its SCL
    assert np.allclose(out, (3500 - 1500) / (3500 + 1500))


def test_a_later_tile_is_read_only_where_the_mosaic_is_empty():
    scene, grid, reader = two_tiles(first_covers=False)
    scl, covering = read_scl(scene, grid, reader)
    out = load_ndvi(scene, covering, scl, grid, reader)
    assert [i["id"] for i in covering] == ["A", "B"]
    b_grids = [g for href, g in reader.calls if href == "B/B04"]
    assert len(b_grids) == 1 and b_grids[0].width < grid.width / 2 and b_grids[0].x0 > grid.x0
    ndvi_a, ndvi_b = 2000 / 5000, 2000 / 5200
    assert np.isclose(out[:, 0], ndvi_a).all() and np.isclose(out[:, -1], ndvi_b).all()  # A first, B fills the rest
    assert np.isfinite(out).all()


def test_signing_failures_give_up_within_the_run_budget():
    calls = []

    def failing(href):
        calls.append(href)
        raise ConnectionError("token service unreachable")

    reader = RasterioReader(sign=failing, give_up_s=0.0)
    grid = SiteGrid(EPSG, 10.0, 400000.0, 3500000.0, 10, 10)
    with pytest.raises(ReadError, match="token service unreachable"):
        reader.read_window("https://acct.blob.core.windows.net/c/a.tif", grid)
    with pytest.raises(ReadError, match="gave up"):
        reader.read_window("https://acct.blob.core.windows.net/c/b.tif", grid)
    assert calls == ["https://acct.blob.core.windows.net/c/a.tif"]  # the second one did not wait on the signer


def test_a_signer_that_hangs_is_abandoned_within_the_budget():
    def slow(href):
        time.sleep(3)
        return href

    reader = RasterioReader(sign=slow, give_up_s=0.2)
    grid = SiteGrid(EPSG, 10.0, 400000.0, 3500000.0, 10, 10)
    t0 = time.monotonic()
    with pytest.raises(ReadError, match="no answer within"):
        reader.read_window("https://acct.blob.core.windows.net/c/a.tif", grid)
    with pytest.raises(ReadError, match="gave up"):
        reader.read_window("https://acct.blob.core.windows.net/c/b.tif", grid)
    assert time.monotonic() - t0 < 2.5  # budget 0.2 s + SIGN_GRACE_S, not the signer's 3 s per scene

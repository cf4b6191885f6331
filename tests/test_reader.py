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
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs=f"EPSG:{EPSG}", transform=T, nodata=0)
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
    return a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width and a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height


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

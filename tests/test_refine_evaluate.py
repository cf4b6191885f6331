"""Interactive refinement through the CLI, and evaluation against truth masks on another grid."""

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from scarmon.cli import main
from scarmon.demo.synthetic import demo_site, generate_catalog, truth_mask
from scarmon.grid import SiteGrid
from scarmon.ingest.discovery import open_catalog
from scarmon.ingest.pipeline import ingest
from scarmon.site import parse_site
from scarmon.store import keys
from scarmon.store.backends import open_store
from scarmon.store.sequence import load_manifest
from scarmon.tracking.corrections import list_corrections
from scarmon.tracking.pipeline import read_mask, track_site


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    raw = demo_site("creep-failure")
    site = parse_site(raw)
    site_file = root / "site.yaml"
    site_file.write_text(yaml.safe_dump(json.loads(json.dumps(raw, default=str))))
    items = generate_catalog(root / "cat", site, start="2021-12-01", end="2022-02-20")
    return site, site_file, items, root


def fresh_store(tracked, name):
    site, _, items, root = tracked
    store = open_store(str(root / name))
    ingest(site, open_catalog(str(items)), store)
    track_site(site, store)
    return store


def test_refine_adds_sticks_and_undo_restores(tracked):
    site, site_file, items, root = tracked
    store = fresh_store(tracked, "s1")
    manifest, _ = load_manifest(store, site.id)
    grid = SiteGrid.from_dict(manifest.grid)
    j = 1
    before = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    rows, cols = np.nonzero(before[j])
    k = np.argmax(cols)  # the scar's easternmost pixel: declare the eastern lobe not scar
    lon, lat = grid.pixel_to_lonlat(cols[k] - 3, rows[k])
    args = [
        "refine",
        "--site",
        str(site_file),
        "--store",
        str(root / "s1"),
        "--date",
        manifest.frames[j].date,
        "--point",
        f"{lon},{lat},0",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "stored 1 correction" in result.output and "tracked" in result.output
    after = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    assert np.array_equal(after[0], before[0])  # frames before the correction untouched
    for b, a in zip(before[j:], after[j:], strict=True):  # the correction sticks on every later frame
        assert a.sum() < b.sum()
    (corr,) = list_corrections(store, site.id)
    listed = CliRunner().invoke(main, ["refine", "--site", str(site_file), "--store", str(root / "s1"), "--list"])
    assert corr["id"] in listed.output and "site file" in listed.output
    undo = CliRunner().invoke(
        main, ["refine", "--site", str(site_file), "--store", str(root / "s1"), "--undo", corr["id"]]
    )
    assert undo.exit_code == 0, undo.output
    restored = [read_mask(store, keys.mask(site.id, f)) for f in manifest.frames]
    assert all(np.array_equal(a, b) for a, b in zip(restored, before, strict=True))


def test_refine_errors_name_what_to_fix(tracked):
    site, site_file, _, root = tracked
    fresh_store(tracked, "s2")
    base = ["refine", "--site", str(site_file), "--store", str(root / "s2")]
    r = CliRunner().invoke(main, base + ["--date", "1999-01-01", "--point", "96.0,31.1,1"])
    assert r.exit_code == 1 and "no frame on 1999-01-01; nearest frames:" in r.output
    lon, lat = site.prompts[0].lon, site.prompts[0].lat
    r = CliRunner().invoke(main, base + ["--date", "2021-12-03", "--point", f"{lon + 1},{lat},1"])
    assert r.exit_code != 0
    r = CliRunner().invoke(main, base + ["--undo", "nope"])
    assert r.exit_code == 1 and "no correction 'nope'" in r.output


def write_truth(path, mask, grid: SiteGrid):
    """A truth mask written at 4 m in the neighbouring UTM zone: evaluate must reproject it."""
    from rasterio.warp import Resampling, reproject

    dst_crs = "EPSG:32646"
    from rasterio.warp import calculate_default_transform

    transform, w, h = calculate_default_transform(
        grid.crs, dst_crs, grid.width, grid.height, *grid.bounds, resolution=4
    )
    out = np.zeros((h, w), np.uint8)
    reproject(
        mask.astype(np.uint8),
        out,
        src_transform=grid.transform,
        src_crs=grid.crs,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
    )
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=dst_crs, transform=transform
    ) as dst:
        dst.write(out, 1)


def test_evaluate_against_truth_on_another_grid(tracked):
    site, site_file, _, root = tracked
    store = fresh_store(tracked, "s3")
    manifest, _ = load_manifest(store, site.id)
    grid = SiteGrid.from_dict(manifest.grid)
    truth_dir = root / "truth"
    truth_dir.mkdir()
    for f in manifest.frames[:3]:
        write_truth(
            truth_dir / f"{f.date}_truth.tif",
            truth_mask(site, grid, dt.date.fromisoformat(f.date), scenario="creep-failure"),
            grid,
        )
    r = CliRunner().invoke(
        main, ["evaluate", "--site", str(site_file), "--store", str(root / "s3"), "--truth", str(truth_dir), "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert len(out["frames"]) == 3 and 0.85 < out["mean"]["iou"] <= 1.0
    assert all(f["precision"] > 0.85 and f["recall"] > 0.85 for f in out["frames"])
    table = CliRunner().invoke(
        main, ["evaluate", "--site", str(site_file), "--store", str(root / "s3"), "--truth", str(truth_dir)]
    )
    assert "mean" in table.output and "(3 frames)" in table.output


def test_scores_are_the_paper_equations():
    from scarmon.tracking.evaluate import scores

    pred = np.array([1, 1, 0, 0], bool)
    truth = np.array([1, 0, 1, 0], bool)
    assert scores(pred, truth) == (1 / 3, 0.5, 0.5)
    assert scores(np.zeros(3, bool), np.zeros(3, bool)) == (1.0, 1.0, 1.0)

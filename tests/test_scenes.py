import pytest

from scarmon.ingest.scenes import (
    _tile,
    asset_key,
    group_scenes,
    item_problem,
    missing_bands,
    relative_orbit,
    scene_id,
    stored_id,
)


def item(
    id_,
    dt="2023-02-16T04:07:01.024Z",
    tile="47RKQ",
    gen="2023-02-17T08:00:00Z",
    platform="Sentinel-2A",
    orbit=33,
    assets=("B04", "B08", "SCL"),
):
    return {
        "id": id_,
        "properties": {
            "datetime": dt,
            "platform": platform,
            "sat:relative_orbit": orbit,
            "s2:mgrs_tile": tile,
            "s2:generation_time": gen,
            "s2:processing_baseline": "05.09",
        },
        "assets": {a: {"href": f"/{id_}/{a}.tif"} for a in assets},
    }


def test_same_pass_tiles_form_one_scene():
    a = item("A", tile="46RGV")
    b = item("B", tile="47RKQ", dt="2023-02-16T04:07:05.024Z")
    c = item("C", dt="2023-02-21T04:07:01Z", platform="Sentinel-2B")
    scenes = group_scenes([c, b, a])
    assert [s.id for s in scenes] == ["S2A_20230216_R033", "S2B_20230221_R033"]
    assert (
        scenes[0].item_ids == ("A", "B")
        and scenes[0].datetime.startswith("2023-02-16T04:07:01")
        and scenes[0].date == "2023-02-16"
    )


def test_reprocessed_duplicate_keeps_newest():
    old = item("OLD", gen="2023-02-17T08:00:00Z")
    new = item("NEW", gen="2024-06-01T00:00:00Z")
    (scene,) = group_scenes([new, old])
    assert scene.item_ids == ("NEW",)


def test_scene_id_from_item_id_when_no_orbit_property():
    it = item(
        "S2B_MSIL2A_20220301T041701_R033_T47RKQ_20220301T083102",
        dt="2022-03-01T04:17:01Z",
        platform="sentinel-2b",
        orbit=None,
    )
    del it["properties"]["sat:relative_orbit"]
    assert scene_id(it) == "S2B_20220301_R033"


def test_asset_names_pc_and_earth_search():
    es = item("E", assets=("red", "nir", "scl"))
    assert (asset_key(es, "red"), asset_key(es, "nir"), asset_key(es, "scl")) == ("red", "nir", "scl")
    assert missing_bands(item("X", assets=("B04", "SCL"))) == ["B08"]


# --- One acquisition as each real catalog describes it (metadata shapes of ../shared/stac_items) --------------------
# S2B pass of 2025-07-31 over MGRS 20EPT, relative orbit 95, datatake GS2B_20250731T131909_043879.

PRODUCT = "S2B_MSIL2A_20250731T131909_N0511_R095_T20EPT_20250731T143919"


def pc_item():
    """Planetary Computer sentinel-2-l2a: id = product name, sat:relative_orbit, s2:mgrs_tile, B04/B08/SCL."""
    return {
        "id": PRODUCT,
        "collection": "sentinel-2-l2a",
        "properties": {
            "datetime": "2025-07-31T13:19:09.024000Z",
            "platform": "Sentinel-2B",
            "sat:relative_orbit": 95,
            "s2:mgrs_tile": "20EPT",
            "s2:processing_baseline": "05.11",
            "s2:product_uri": PRODUCT + ".SAFE",
            "s2:generation_time": "2025-07-31T14:39:19.000000Z",
            "s2:datatake_id": "GS2B_20250731T131909_043879_N05.11",
        },
        "assets": {k: {"href": f"https://x.blob.core.windows.net/{k}.tif"} for k in ("B04", "B08", "SCL")},
    }


def es_c1_item():
    """Earth Search sentinel-2-c1-l2a: id S2B_T20EPT_<tile time>_L2A, tile datetime, no sat:relative_orbit."""
    return {
        "id": "S2B_T20EPT_20250731T131905_L2A",
        "collection": "sentinel-2-c1-l2a",
        "properties": {
            "datetime": "2025-07-31T13:19:22.930000Z",
            "platform": "sentinel-2b",
            "mgrs:utm_zone": 20,
            "mgrs:latitude_band": "E",
            "mgrs:grid_square": "PT",
            "s2:processing_baseline": "05.11",
            "s2:product_uri": PRODUCT + ".SAFE",
            "s2:generation_time": "2025-07-31T14:39:19.000000Z",
            "s2:datatake_id": "GS2B_20250731T131909_043879_N05.11",
            "updated": "2025-07-31T15:00:24.817Z",
        },
        "assets": {
            k: {"href": f"https://e84/{k}.tif", "raster:bands": [{"scale": 0.0001, "offset": -0.1}]}
            for k in ("red", "nir", "scl")
        },
    }


def es_v1_item(seq=0, updated="2025-07-31T15:02:20.427Z"):
    """Earth Search v1 sentinel-2-l2a: id S2B_20EPT_20250731_<seq>_L2A, s2:sequence, earthsearch:* flags."""
    item = es_c1_item()
    item["id"], item["collection"] = f"S2B_20EPT_20250731_{seq}_L2A", "sentinel-2-l2a"
    item["properties"].update({"s2:sequence": str(seq), "earthsearch:boa_offset_applied": True, "updated": updated})
    return item


def es_v0_item():
    """Earth Search v0 sentinel-s2-l2a-cogs: sentinel:* properties only (STAC 1.0.0-beta)."""
    return {
        "id": "S2B_20EPT_20250731_0_L2A",
        "collection": "sentinel-s2-l2a-cogs",
        "properties": {
            "datetime": "2025-07-31T13:19:22Z",
            "platform": "sentinel-2b",
            "sentinel:latitude_band": "E",
            "sentinel:grid_square": "PT",
            "sentinel:sequence": "0",
            "sentinel:product_id": "S2B_MSIL2A_20250731T131909_N0511_R095_T20EPT_20250731T143919",
        },
        "assets": {k: {"href": f"https://v0/{k}.tif"} for k in ("B04", "B08", "SCL")},
    }


def test_same_acquisition_has_one_id_on_every_catalog():
    ids = {scene_id(f()) for f in (pc_item, es_c1_item, es_v1_item, es_v0_item)}
    assert ids == {"S2B_20250731_R095"}
    assert {_tile(f()) for f in (pc_item, es_c1_item, es_v1_item, es_v0_item)} == {"20EPT"}


def test_orbit_from_datatake_when_no_product_name():
    item = es_c1_item()
    del item["properties"]["s2:product_uri"]
    assert relative_orbit(item) == 95 and scene_id(item) == "S2B_20250731_R095"
    a = {
        "id": "x",
        "properties": {
            "datetime": "2024-04-12T17:53:00Z",
            "platform": "sentinel-2a",
            "s2:datatake_id": "GS2A_20240412T173901_045998_N05.10",
        },
    }
    assert relative_orbit(a) == 98  # the real c1 item S2A_T13TDE_20240412T175055_L2A says R098
    del a["properties"]["s2:datatake_id"]
    assert relative_orbit(a) is None and scene_id(a) == "S2A_20240412"


def test_sensing_date_from_product_name_not_tile_time():
    """A datatake starting before midnight whose tile is sensed after it: both catalogs must agree on the date."""
    item = es_c1_item()
    item["properties"]["s2:product_uri"] = "S2B_MSIL2A_20250730T235958_N0511_R095_T20EPT_20250731T143919.SAFE"
    item["properties"]["datetime"] = "2025-07-31T00:00:12Z"
    assert scene_id(item) == "S2B_20250730_R095"


def test_stored_orbitless_ids_are_reused():
    stored = {"S2B_20250731", "S2A_20250805_R095"}
    assert stored_id("S2B_20250731_R095", stored) == "S2B_20250731"
    assert stored_id("S2A_20250805", stored) == "S2A_20250805_R095"
    assert stored_id("S2A_20250810_R095", stored) == "S2A_20250810_R095"
    assert stored_id("S2B_20250731_R095", set()) == "S2B_20250731_R095"


def test_earth_search_sequence_breaks_generation_ties():
    (scene,) = group_scenes([es_v1_item(1, updated="2025-07-31T15:00:00Z"), es_v1_item(0)])
    assert scene.item_ids == ("S2B_20EPT_20250731_1_L2A",)  # _1_ reprocesses _0_ (same generation time)


def test_numeric_baselines_are_normalised():
    item = pc_item()
    item["properties"]["s2:processing_baseline"] = 4
    assert group_scenes([item])[0].processing_baseline == "04.00"
    v0 = es_v0_item()
    assert group_scenes([v0])[0].processing_baseline == "05.11"  # from sentinel:product_id's N0511


@pytest.mark.parametrize(
    "bad, why",
    [
        ([1, 2], "not an object"),
        ({"properties": {}}, "without an id"),
        ({"id": "a", "properties": {"datetime": "yesterday"}}, "not an ISO 8601"),
        ({"id": "a", "properties": {"datetime": None}}, "not an ISO 8601"),
        ({"id": "a", "properties": "x"}, "properties is not an object"),
        ({"id": "a", "properties": {"datetime": "2024-01-01T00:00:00Z"}, "assets": []}, "assets is not an object"),
    ],
)
def test_item_problems(bad, why):
    assert why in item_problem(bad)


def test_good_items_have_no_problem():
    assert all(item_problem(f()) is None for f in (pc_item, es_c1_item, es_v1_item, es_v0_item))


def test_an_asset_without_a_usable_href_is_missing():
    item = pc_item()
    item["assets"]["B08"]["href"] = 42
    item["assets"]["SCL"] = "SCL.tif"
    assert missing_bands(item) == ["B08", "SCL"]

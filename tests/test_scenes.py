from scarmon.ingest.scenes import asset_key, group_scenes, missing_bands, scene_id


def item(id_, dt="2023-02-16T04:07:01.024Z", tile="47RKQ", gen="2023-02-17T08:00:00Z", platform="Sentinel-2A", orbit=33, assets=("B04", "B08", "SCL")):
    return {"id": id_, "properties": {"datetime": dt, "platform": platform, "sat:relative_orbit": orbit, "s2:mgrs_tile": tile,
                                      "s2:generation_time": gen, "s2:processing_baseline": "05.09"},
            "assets": {a: {"href": f"/{id_}/{a}.tif"} for a in assets}}


def test_same_pass_tiles_form_one_scene():
    a = item("A", tile="46RGV")
    b = item("B", tile="47RKQ", dt="2023-02-16T04:07:05.024Z")
    c = item("C", dt="2023-02-21T04:07:01Z", platform="Sentinel-2B")
    scenes = group_scenes([c, b, a])
    assert [s.id for s in scenes] == ["S2A_20230216_R033", "S2B_20230221_R033"]
    assert scenes[0].item_ids == ("A", "B") and scenes[0].datetime.startswith("2023-02-16T04:07:01") and scenes[0].date == "2023-02-16"


def test_reprocessed_duplicate_keeps_newest():
    old = item("OLD", gen="2023-02-17T08:00:00Z")
    new = item("NEW", gen="2024-06-01T00:00:00Z")
    (scene,) = group_scenes([new, old])
    assert scene.item_ids == ("NEW",)


def test_scene_id_from_item_id_when_no_orbit_property():
    it = item("S2B_MSIL2A_20220301T041701_R033_T47RKQ_20220301T083102", dt="2022-03-01T04:17:01Z", platform="sentinel-2b", orbit=None)
    del it["properties"]["sat:relative_orbit"]
    assert scene_id(it) == "S2B_20220301_R033"


def test_asset_names_pc_and_earth_search():
    es = item("E", assets=("red", "nir", "scl"))
    assert (asset_key(es, "red"), asset_key(es, "nir"), asset_key(es, "scl")) == ("red", "nir", "scl")
    assert missing_bands(item("X", assets=("B04", "SCL"))) == ["B08"]

"""Navigation data layer: connectivity/R2R/HDF5/TSV round trips, the tokenizer, and every error path."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from lodestar.envs.nav.data.connectivity import list_scans, load_connectivity, write_connectivity
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import (
    feature_key,
    load_features_hdf5,
    load_features_tsv,
    write_features_hdf5,
    write_features_tsv,
)
from lodestar.envs.nav.data.r2r import Episode, load_r2r, write_r2r
from lodestar.envs.nav.data.tokenizer import SPECIAL_TOKENS, Vocab, build_vocab, tokenize
from tests.nav_fixtures import FEATURE_DIM, line_graph, triangle_graph


@pytest.fixture(scope="module")
def data_dir(grid_dataset: Path) -> Path:
    return grid_dataset


@pytest.fixture
def copy_dir(data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset that a test may corrupt."""
    return Path(shutil.copytree(data_dir, tmp_path / "copy"))


# -- connectivity ------------------------------------------------------------------------------------


def test_connectivity_round_trip(tmp_path: Path) -> None:
    graph = triangle_graph()
    path = tmp_path / "tri_connectivity.json"
    write_connectivity(path, graph, heights=[1.4, 1.5, 1.6])
    entries = json.loads(path.read_text())
    assert set(entries[0]) == {"image_id", "pose", "included", "visible", "unobstructed", "height"}
    assert entries[1]["pose"][3] == 4.0 and entries[2]["pose"][7] == 3.0 and entries[2]["pose"][11] == 1.5
    assert entries[0]["height"] == 1.4
    loaded = load_connectivity(path)
    assert loaded.scan == "tri"
    assert loaded.viewpoints == graph.viewpoints
    np.testing.assert_allclose(loaded.positions, graph.positions)
    assert sorted(loaded.edges) == sorted(graph.edges)
    assert loaded.distance("A", "C") == pytest.approx(5.0)


def test_connectivity_symmetrizes_and_drops_excluded(tmp_path: Path) -> None:
    graph = line_graph([0.0, 2.0, 4.0])
    path = tmp_path / "s_connectivity.json"
    write_connectivity(path, graph)
    entries = json.loads(path.read_text())
    entries[1]["unobstructed"][2] = False  # only v2 says v1-v2 is unobstructed: still an edge
    entries[0]["included"] = False  # v0 goes, with its edge
    path.write_text(json.dumps(entries))
    loaded = load_connectivity(path)
    assert loaded.viewpoints == ["v1", "v2"]
    assert loaded.edges == [(0, 1)]


def test_fixture_excluded_viewpoint_is_dropped(data_dir: Path) -> None:
    scan = list_scans(data_dir / "connectivity")[0]
    raw = json.loads((data_dir / "connectivity" / f"{scan}_connectivity.json").read_text())
    graph = NavDataset(data_dir).graph(scan)
    assert len(raw) == graph.num_viewpoints + 1
    assert raw[-1]["image_id"] not in graph.index
    assert graph.is_connected()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: "not json", "not valid JSON"),
        (lambda e: {"a": 1}, "non-empty JSON list"),
        (lambda e: [{k: v for k, v in e[0].items() if k != "pose"}, *e[1:]], "missing key 'pose'"),
        (lambda e: [{**e[0], "pose": e[0]["pose"][:12]}, *e[1:]], "16 numbers"),
        (lambda e: [{**e[0], "unobstructed": [True]}, *e[1:]], "'unobstructed' must list"),
        (lambda e: [{**x, "included": False} for x in e], "no viewpoint is 'included'"),
        (lambda e: [e[0], e[0], *e[2:]], "duplicate viewpoint ids"),
    ],
)
def test_connectivity_errors(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "bad_connectivity.json"
    write_connectivity(path, line_graph([0.0, 2.0, 4.0]))
    entries = json.loads(path.read_text())
    bad = mutate(entries)
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(NavDataError, match=message) as info:
        load_connectivity(path)
    assert "bad_connectivity.json" in str(info.value)


def test_missing_connectivity_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope_connectivity.json"):
        load_connectivity(tmp_path / "nope_connectivity.json")


def test_scans_txt_must_match_files(copy_dir: Path) -> None:
    (copy_dir / "connectivity" / "scans.txt").write_text("ghostScan01\n")
    with pytest.raises(NavDataError, match="ghostScan01"):
        list_scans(copy_dir / "connectivity")


def test_scans_without_scans_txt(copy_dir: Path) -> None:
    expected = sorted(list_scans(copy_dir / "connectivity"))
    (copy_dir / "connectivity" / "scans.txt").unlink()
    assert list_scans(copy_dir / "connectivity") == expected


# -- R2R episodes ------------------------------------------------------------------------------------


def test_r2r_round_trip_ignores_unknown_keys(tmp_path: Path) -> None:
    episodes = [
        Episode(7, "scanA", 1.25, ["a", "b", "c"], ["go left.", "walk", "stop"], 4.5),
        Episode("x9", "scanB", 0.0, ["d"], ["wait here"]),
    ]
    path = tmp_path / "R2R_train.json"
    write_r2r(path, episodes)
    raw = json.loads(path.read_text())
    raw[0]["instr_encodings"] = ["abc"]
    path.write_text(json.dumps(raw))
    loaded = load_r2r(path)
    assert loaded == episodes
    assert loaded[0].instr_id(2) == "7_2"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: "{", "not valid JSON"),
        (lambda e: {"x": e}, "JSON list of episodes"),
        (lambda e: [{k: v for k, v in e[0].items() if k != "scan"}], "missing key 'scan'"),
        (lambda e: [{**e[0], "path": []}], "non-empty list of viewpoint ids"),
        (lambda e: [{**e[0], "heading": "north"}], "'heading' must be a finite number"),
        (lambda e: [{**e[0], "instructions": "go"}], "'instructions' must be a list"),
        (lambda e: [e[0], e[0]], "duplicate path_id"),
    ],
)
def test_r2r_format_errors(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "R2R_bad.json"
    write_r2r(path, [Episode(3, "scanA", 0.5, ["a", "b"], ["go"])])
    bad = mutate(json.loads(path.read_text()))
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(NavDataError, match=message) as info:
        load_r2r(path)
    assert "R2R_bad.json" in str(info.value)


def _corrupt_first_episode(directory: Path, split: str, **changes) -> None:
    path = directory / f"R2R_{split}.json"
    raw = json.loads(path.read_text())
    raw[0].update(changes)
    path.write_text(json.dumps(raw))


def test_episode_unknown_scan(copy_dir: Path) -> None:
    _corrupt_first_episode(copy_dir, "train", scan="noSuchScan0")
    with pytest.raises(NavDataError, match="unknown scan 'noSuchScan0'") as info:
        NavDataset(copy_dir).episodes("train")
    assert "R2R_train.json" in str(info.value)


def test_episode_unknown_viewpoint(copy_dir: Path) -> None:
    path = json.loads((copy_dir / "R2R_train.json").read_text())[0]["path"]
    _corrupt_first_episode(copy_dir, "train", path=[*path[:-1], "f" * 32])
    with pytest.raises(NavDataError, match="viewpoint 'f{32}' is not in scan"):
        NavDataset(copy_dir).episodes("train")


def test_episode_path_not_a_walk(copy_dir: Path) -> None:
    episode = json.loads((copy_dir / "R2R_train.json").read_text())[0]
    graph = NavDataset(copy_dir).graph(episode["scan"])
    start = graph.index[episode["path"][0]]
    far = next(vp for i, vp in enumerate(graph.viewpoints) if i != start and not graph.adjacency[start, i])
    _corrupt_first_episode(copy_dir, "train", path=[episode["path"][0], far])
    with pytest.raises(NavDataError, match="is not an edge"):
        NavDataset(copy_dir).episodes("train")


def test_missing_split_lists_available(data_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="val_seen"):
        NavDataset(data_dir).episodes("test")


def test_missing_dataset_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        NavDataset(tmp_path / "nowhere")


# -- features ----------------------------------------------------------------------------------------


def _random_features(n: int = 3, dim: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        feature_key("scanA", f"vp{i}"): rng.standard_normal((36, dim)).astype(np.float32) for i in range(n)
    }


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_hdf5_round_trip(tmp_path: Path, dtype) -> None:
    features = _random_features()
    write_features_hdf5(tmp_path / "f.hdf5", features, dtype=dtype)
    loaded = load_features_hdf5(tmp_path / "f.hdf5")
    assert loaded.keys() == features.keys()
    for key, value in features.items():
        assert loaded[key].dtype == dtype
        np.testing.assert_allclose(loaded[key], value, rtol=1e-3, atol=1e-3)
    subset = load_features_hdf5(tmp_path / "f.hdf5", ["scanA_vp1"])
    assert list(subset) == ["scanA_vp1"]


def test_tsv_round_trip(tmp_path: Path) -> None:
    features = _random_features(dim=7)
    write_features_tsv(tmp_path / "f.tsv", features)
    line = (tmp_path / "f.tsv").read_text().splitlines()[0].split("\t")
    assert line[:5] == ["scanA", "vp0", "640", "480", "60"]
    loaded = load_features_tsv(tmp_path / "f.tsv", feature_dim=7)
    for key, value in features.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_feature_errors(tmp_path: Path) -> None:
    features = _random_features()
    features["scanA_bad"] = np.zeros((12, 5), np.float32)
    write_features_hdf5(tmp_path / "shape.hdf5", features)
    with pytest.raises(NavDataError, match=r"'scanA_bad' has shape \[12, 5\]"):
        load_features_hdf5(tmp_path / "shape.hdf5")
    with pytest.raises(NavDataError, match="no features for 1 viewpoints"):
        load_features_hdf5(tmp_path / "shape.hdf5", ["scanA_vp0", "scanA_missing"])
    (tmp_path / "junk.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(NavDataError, match="junk.hdf5"):
        load_features_hdf5(tmp_path / "junk.hdf5")
    with pytest.raises(FileNotFoundError):
        load_features_hdf5(tmp_path / "absent.hdf5")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("scanA\tvp0\t640\t480\n", "has 4 columns"),
        ("scanA\tvp0\t640\t480\t60\t@@@\n", "not valid base64"),
        ("scanA\tvp0\t640\t480\t60\tAAAA\n", "bytes of features"),
    ],
)
def test_tsv_errors(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "bad.tsv").write_text(line)
    with pytest.raises(NavDataError, match=message):
        load_features_tsv(tmp_path / "bad.tsv", feature_dim=4)


def test_garbled_hdf5_is_an_error_naming_the_file_never_wrong_values(tmp_path: Path) -> None:
    """Random bytes, half a file and 64 garbled bytes at 48 places: each load is a NavDataError naming
    the file or returns the features as written (damage in unused space), never another error."""
    good = tmp_path / "good.hdf5"
    write_features_hdf5(good, _random_features(n=6, dim=8))
    written = load_features_hdf5(good)
    blob = good.read_bytes()
    rng = np.random.default_rng(0)
    garbled = {"random bytes": rng.bytes(len(blob)), "truncated": blob[: len(blob) // 2]}
    for offset in range(0, len(blob) - 64, len(blob) // 48):
        garbled[f"64 bytes at {offset}"] = blob[:offset] + rng.bytes(64) + blob[offset + 64 :]
    path = tmp_path / "garbled.hdf5"
    errors = 0
    for damage, data in garbled.items():
        path.write_bytes(data)
        try:
            loaded = load_features_hdf5(path)
        except NavDataError as exc:
            assert str(exc).startswith(f"{path}: "), damage
            errors += 1
            continue
        assert loaded.keys() == written.keys(), damage
        assert all(np.array_equal(loaded[k], written[k]) for k in written), damage
    assert errors > len(garbled) // 4  # most of a small file is spare room in its indexes


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_features_are_an_error_naming_the_key(tmp_path: Path, value: float) -> None:
    features = _random_features()
    features["scanA_vp1"][4, 2] = value
    write_features_hdf5(tmp_path / "f.hdf5", features)
    with pytest.raises(NavDataError, match=r"f\.hdf5: feature 'scanA_vp1' has non-finite values"):
        load_features_hdf5(tmp_path / "f.hdf5")
    assert list(load_features_hdf5(tmp_path / "f.hdf5", ["scanA_vp2"])) == ["scanA_vp2"]
    write_features_tsv(tmp_path / "f.tsv", features)
    with pytest.raises(NavDataError, match=r"f\.tsv: feature 'scanA_vp1' has non-finite values"):
        load_features_tsv(tmp_path / "f.tsv", feature_dim=5)


def test_wrong_shape_or_dtype_is_an_error_naming_the_key(tmp_path: Path) -> None:
    good = _random_features()
    cases = {  # features as stored, the bad key, the complaint
        "[36, 0] alone": (
            {"scanA_vp0": np.zeros((36, 0), np.float32)},
            "scanA_vp0",
            r"\[36, 0\], expected \[36, D\]",
        ),
        "[36, 6]": (
            {**good, "scanA_vpx": np.zeros((36, 6), np.float32)},
            "scanA_vpx",
            r"\[36, 6\], expected \[36, 5\]",
        ),
        "[36]": ({**good, "scanA_vpx": np.zeros(36, np.float32)}, "scanA_vpx", r"\[36\], expected \[36, 5\]"),
        "int32": (
            {**good, "scanA_vpx": np.zeros((36, 5), np.int32)},
            "scanA_vpx",
            "dtype int32, expected floats",
        ),
    }
    for case, (features, key, message) in cases.items():
        path = tmp_path / f"{case}.hdf5"
        with h5py.File(path, "w") as f:  # as is: write_features_hdf5 would cast to floats
            for name, value in features.items():
                f.create_dataset(name, data=value)
        with pytest.raises(NavDataError, match=re.escape(f"{path}: feature {key!r} has ") + ".*" + message):
            load_features_hdf5(path)


def test_dataset_features_in_packing_order(data_dir: Path) -> None:
    dataset = NavDataset(data_dir)
    scans = dataset.scans[:2]
    table = dataset.load_features("random", scans)
    keys = NavDataset.viewpoint_keys(dataset.graph(s) for s in scans)
    assert table.shape == (len(keys), 36, FEATURE_DIM)
    raw = load_features_hdf5(data_dir / "features" / "random.hdf5", [keys[5]])
    np.testing.assert_array_equal(table[5], raw[keys[5]])


def test_dataset_tsv_features(copy_dir: Path) -> None:
    dataset = NavDataset(copy_dir)
    table = load_features_hdf5(copy_dir / "features" / "random.hdf5")
    write_features_tsv(copy_dir / "features" / "old.tsv", table)
    loaded = dataset.load_features("old", dataset.scans, tsv_dim=FEATURE_DIM)
    np.testing.assert_allclose(loaded, dataset.load_features("random", dataset.scans))


def test_features_missing_for_used_viewpoint(copy_dir: Path) -> None:
    dataset = NavDataset(copy_dir)
    table = load_features_hdf5(copy_dir / "features" / "random.hdf5")
    victim = NavDataset.viewpoint_keys([dataset.graph(dataset.scans[0])])[3]
    del table[victim]
    write_features_hdf5(copy_dir / "features" / "random.hdf5", table)
    with pytest.raises(NavDataError, match=victim):
        dataset.load_features("random", dataset.scans)
    with pytest.raises(FileNotFoundError, match="available"):
        dataset.load_features("clip", dataset.scans)


def test_dataset_features_with_nan_name_the_file_and_key(copy_dir: Path) -> None:
    dataset = NavDataset(copy_dir)
    path = copy_dir / "features" / "random.hdf5"
    table = load_features_hdf5(path)
    victim = NavDataset.viewpoint_keys([dataset.graph(dataset.scans[1])])[2]
    table[victim][0, 0] = np.nan
    write_features_hdf5(path, table)
    with pytest.raises(NavDataError, match=re.escape(f"{path}: feature '{victim}' has non-finite values")):
        dataset.load_features("random", dataset.scans)


# -- tokenizer and vocabulary ------------------------------------------------------------------------


def test_tokenize() -> None:
    assert tokenize("Walk past the sofa, then don't stop!") == [
        "walk", "past", "the", "sofa", ",", "then", "don't", "stop", "!",
    ]  # fmt: skip


def test_vocab_build_encode_decode(tmp_path: Path) -> None:
    texts = ["walk to the door.", "walk past the sofa.", "stop at the door."]
    vocab = Vocab.build(texts, min_count=2)
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert set(vocab.tokens[len(SPECIAL_TOKENS) :]) == {"the", ".", "walk", "door"}
    assert vocab.tokens[len(SPECIAL_TOKENS)] == "."  # most frequent first (ties alphabetical)
    ids = vocab.encode("Walk to the door.")
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert ids[2] == vocab.unk_id  # "to" occurs once
    assert vocab.decode(ids) == "walk the door."
    assert vocab.decode([*ids, vocab.token_to_id("walk")]) == "walk the door."  # stops at EOS
    short = vocab.encode("walk the door walk the door", max_len=4)
    assert len(short) == 4 and short[-1] == vocab.eos_id
    ids_t, mask = vocab.encode_batch(["walk", "walk the door ."], max_len=6)
    assert ids_t.shape == (2, 6) and mask.sum(1).tolist() == [3, 6]
    vocab.save(tmp_path / "vocab.txt")
    assert Vocab.load(tmp_path / "vocab.txt") == vocab


def test_vocab_file_errors(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(ValueError, match="special tokens"):
        Vocab.load(tmp_path / "vocab.txt")
    with pytest.raises(FileNotFoundError):
        Vocab.load(tmp_path / "none.txt")
    with pytest.raises(ValueError, match="no room"):
        Vocab(list(SPECIAL_TOKENS)).encode("go", max_len=1)


def test_build_vocab_and_dataset_vocab(copy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = Vocab.load(copy_dir / "vocab.txt")
    (copy_dir / "vocab.txt").unlink()
    vocab = NavDataset(copy_dir).vocab(min_count=1)
    assert vocab == written  # built from R2R_train.json the way the file was
    assert not (copy_dir / "vocab.txt").exists()  # and never written into the data folder
    assert re.search(r"^warning: .*vocab\.txt not found.*R2R_train\.json", capsys.readouterr().err, re.M)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        NavDataset(copy_dir).vocab(build_if_missing=False)
    assert len(build_vocab(copy_dir, min_count=1000, write=False)) == len(SPECIAL_TOKENS)

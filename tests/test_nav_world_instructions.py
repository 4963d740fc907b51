"""R2R-style episodes and the human-style instruction generator of the navigation world."""

from __future__ import annotations

import math
import re
from itertools import pairwise

import numpy as np
import pytest

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.tokenizer import tokenize
from lodestar.envs.nav.world.build import load_house
from lodestar.envs.nav.world.episodes import (
    PathConfig,
    candidate_pairs,
    hop_counts,
    sample_paths,
    split_of_house,
)
from lodestar.envs.nav.world.houses import Door, House, HouseObject, Room
from lodestar.envs.nav.world.instructions import (
    LOOSE_NAMES,
    OBJECT_NAMES,
    ROOM_NAMES,
    describe_path,
    generate_instructions,
    heading_of,
    relative_turn,
)
from lodestar.envs.nav.world.viewpoints import Viewpoint

SPLITS = ("train", "val_seen", "val_unseen", "test")


@pytest.fixture(scope="module")
def world(tiny_world):
    data = NavDataset(tiny_world)
    return tiny_world, data, {name: data.episodes(name) for name in SPLITS}


def _words(text: str) -> list[str]:
    return [t for t in tokenize(text) if t[0].isalnum()]


# --------------------------------------------------------------------------------------- episodes


def test_paths_are_r2r_shortest_paths(world):
    _, data, splits = world
    for episodes in splits.values():
        for ep in episodes:
            graph = data.graph(ep.scan)
            assert 4 <= len(ep.path) - 1 <= 6
            assert ep.distance >= 5.0
            assert ep.path == graph.shortest_path(ep.path[0], ep.path[-1])
            walked = sum(graph.edge_length(graph.index[a], graph.index[b]) for a, b in pairwise(ep.path))
            assert ep.distance == pytest.approx(walked, abs=1e-3)
            assert ep.distance == pytest.approx(graph.distance(ep.path[0], ep.path[-1]), abs=1e-3)
            assert 0.0 <= ep.heading < 2 * math.pi
            assert len(ep.instructions) == 3 and len(set(ep.instructions)) == 3


def test_splits_are_like_r2r(world):
    _, _, splits = world
    scans = {name: {ep.scan for ep in eps} for name, eps in splits.items()}
    assert scans["val_seen"] <= scans["train"]
    assert scans["val_unseen"].isdisjoint(scans["train"]) and scans["test"].isdisjoint(scans["train"])
    assert scans["val_unseen"].isdisjoint(scans["test"])
    train_pairs = {(ep.scan, frozenset((ep.path[0], ep.path[-1]))) for ep in splits["train"]}
    seen_pairs = {(ep.scan, frozenset((ep.path[0], ep.path[-1]))) for ep in splits["val_seen"]}
    assert len(train_pairs) == len(splits["train"]) and train_pairs.isdisjoint(seen_pairs)
    ids = [ep.path_id for eps in splits.values() for ep in eps]
    assert len(set(ids)) == len(ids)
    assert split_of_house(0, 3, 1, 1) == "train" and split_of_house(3, 3, 1, 1) == "val_unseen"
    assert split_of_house(4, 3, 1, 1) == "test"
    with pytest.raises(ValueError, match="house index 5"):
        split_of_house(5, 3, 1, 1)


def test_hop_counts_follow_the_shortest_path_table(world):
    _, data, _ = world
    graph = data.graph(data.scans[0])
    hops = hop_counts(graph)
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, graph.num_viewpoints, size=(40, 2)):
        assert hops[a, b] == len(graph.shortest_path(int(a), int(b))) - 1
    pairs = candidate_pairs(graph, PathConfig(min_edges=4, max_edges=6, min_distance=5.0))
    assert len(pairs) and (pairs[:, 0] < pairs[:, 1]).all()
    first, second = sample_paths(graph, rng, [5, 1000])
    assert len(first) == 5 and len(first) + len(second) == len(pairs)
    assert {frozenset(p) for p in first}.isdisjoint(frozenset(p) for p in second)
    with pytest.raises(ValueError, match="min_edges"):
        PathConfig(min_edges=5, max_edges=4)


# ------------------------------------------------------------------------------------ conventions


def test_heading_convention_is_clockwise_from_north():
    assert heading_of(0.0, 1.0) == pytest.approx(0.0)
    assert heading_of(1.0, 0.0) == pytest.approx(math.pi / 2)  # east is a right turn from north
    assert relative_turn(0.0, math.pi / 2) == pytest.approx(90.0)
    assert relative_turn(0.0, -math.pi / 2) == pytest.approx(-90.0)
    assert relative_turn(math.radians(350), math.radians(10)) == pytest.approx(20.0)
    assert relative_turn(0.0, math.pi) == pytest.approx(180.0)


def _handmade():
    """A kitchen and a bedroom joined by a door; a fridge beside the first leg, a bed at the goal."""
    rooms = [Room(0, "kitchen", 0.0, 0.0, 6.0, 6.0), Room(1, "bedroom", 6.0, 0.0, 12.0, 6.0)]
    doors = [Door(0, (0, 1), 6.0, 3.0, 1.0, "y")]
    objects = [
        HouseObject(0, "fridge", 0, 1.0, 2.5, 0.0, 0.7, 0.7, 1.8, "floor"),
        HouseObject(1, "bed", 1, 10.5, 3.0, 0.0, 1.6, 2.0, 0.6, "floor"),
    ]
    house = House("handmade000", 12.0, 6.0, 2.7, 0.12, rooms, doors, [], objects)
    spots = [(2.0, 1.0, 0, -1), (2.0, 4.0, 0, -1), (5.0, 4.0, 0, -1), (6.0, 3.0, 0, 0), (9.0, 3.0, 1, -1)]
    viewpoints = [Viewpoint(f"{k:032x}", x, y, 1.5, room, door) for k, (x, y, room, door) in enumerate(spots)]
    return house, viewpoints, [0, 1, 2, 3, 4]


def test_describe_path_reads_turns_rooms_and_landmarks():
    house, viewpoints, path = _handmade()
    d = describe_path(house, viewpoints, path, heading=0.0)
    assert [round(s.turn) for s in d.steps] == [0, 90, 45, -45]
    assert d.start_room == 0 and d.goal_room == 1 and d.goal_door_room == -1
    assert [s.rooms for s in d.steps] == [(), (), (), (1,)]
    assert d.steps[0].landmark == 0 and d.steps[0].side == "left"  # the fridge, west of a north walk
    assert d.steps[2].door and d.steps[3].door
    assert d.stop_object == 1 and d.stop_side == "front"
    # Facing south at the start, the first step is a turn around.
    assert abs(describe_path(house, viewpoints, path, heading=math.pi).steps[0].turn) == pytest.approx(180.0)
    with pytest.raises(ValueError, match="at least two"):
        describe_path(house, viewpoints, [0], 0.0)


def test_instructions_follow_the_description_with_some_imprecision():
    house, viewpoints, path = _handmade()
    rng = np.random.default_rng(0)
    texts = [t for _ in range(100) for t in generate_instructions(house, viewpoints, path, 0.0, rng)]
    lower = [t.lower() for t in texts]
    says_right = np.mean([bool(re.search(r"\bright\b", t)) for t in lower])
    says_left_turn = np.mean([bool(re.search(r"\b(turn|make a|take a|go|hang a) left\b", t)) for t in lower])
    assert 0.6 < says_right < 1.0  # the right turn is usually said, sometimes omitted
    assert says_left_turn < 0.1  # there is no sharp left turn to describe
    assert np.mean(["bed" in t for t in lower]) > 0.6
    assert np.mean(["bedroom" in t or "bed room" in t for t in lower]) > 0.6
    assert not any(re.search(r"(exit|leave|out of) the (bedroom|bed room)", t) for t in lower)
    assert (
        np.mean(
            [
                bool(re.search(r"(exit|leave|out of|from) the (large |big |spacious )?kitchen", t))
                for t in lower
            ]
        )
        > 0.5
    )
    assert len(set(texts)) > 0.9 * len(texts)
    again = np.random.default_rng(0)
    assert generate_instructions(house, viewpoints, path, 0.0, again) == texts[:3]


def test_instruction_lengths_and_variety(world):
    _, _, splits = world
    texts = [t for eps in splits.values() for ep in eps for t in ep.instructions]
    lengths = np.array([len(_words(t)) for t in texts])
    assert 20 <= lengths.mean() <= 40 and lengths.std() > 5
    for n, floor in ((2, 0.12), (3, 0.3)):
        grams = [tuple(w[i : i + n]) for t in texts for w in [_words(t)] for i in range(len(w) - n + 1)]
        assert len(set(grams)) / len(grams) > floor, n
    for eps in splits.values():
        for ep in eps:
            trigrams = [
                {tuple(w[i : i + 3]) for w in [_words(t)] for i in range(len(w) - 2)} for t in ep.instructions
            ]
            for a, b in pairwise([*trigrams, trigrams[0]]):
                assert len(a & b) / len(a | b) < 0.9


def test_instructions_say_where_to_stop(world):
    root, data, splits = world
    houses = {scan: load_house(root, scan) for scan in data.scans}
    for eps in splits.values():
        for ep in eps:
            house, viewpoints = houses[ep.scan]
            index = {v.id: k for k, v in enumerate(viewpoints)}
            d = describe_path(house, viewpoints, [index[v] for v in ep.path], ep.heading)
            names = set()
            for room in (d.goal_room, d.goal_door_room):
                if room >= 0:
                    names |= set(ROOM_NAMES[house.rooms[room].type])
            if d.stop_object >= 0:
                category = house.objects[d.stop_object].category
                names |= {*OBJECT_NAMES.get(category, [category]), LOOSE_NAMES.get(category, category)}
            text = " ".join(ep.instructions).lower()
            assert any(re.search(rf"\b{re.escape(name)}\b", text) for name in names), (ep.path_id, names)

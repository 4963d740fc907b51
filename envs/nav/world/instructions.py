"""Human-style route instructions, written from the house geometry (the stand-in for R2R annotators).

:func:`describe_path` turns a path into facts an annotator would notice: the turns (relative to the
previous direction of travel, the start heading for the first step), the rooms left and entered and
the doorways crossed, salient objects passed on either side, and where the path ends (next to an
object, in a room, in a doorway). :func:`write_instruction` words those facts with a randomly drawn
style: level of detail, sentence structure, synonyms, connectives, punctuation, and a small rate of
human imprecision (an omitted or softened turn, a loosely named landmark, rarely a swapped side).

Only dataset building calls this module; the speaker model must learn to write instructions itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lodestar.envs.nav.world.houses import House
from lodestar.envs.nav.world.viewpoints import Viewpoint

SLIGHT_TURN, TURN, TURN_AROUND = 30.0, 60.0, 140.0  # degrees of heading change

ROOM_NAMES: dict[str, list[str]] = {
    "living room": ["living room", "living room", "lounge", "sitting room"],
    "kitchen": ["kitchen"],
    "dining room": ["dining room", "dining room", "dining area"],
    "bedroom": ["bedroom", "bedroom", "bedroom", "bed room"],
    "bathroom": ["bathroom", "bathroom", "restroom", "washroom"],
    "hallway": ["hallway", "hallway", "hall", "corridor"],
    "office": ["office", "office", "study"],
    "laundry room": ["laundry room", "laundry room", "laundry"],
    "closet": ["closet", "closet", "walk-in closet"],
    "family room": ["family room", "family room", "den"],
    "gym": ["gym", "exercise room", "workout room"],
    "entryway": ["entryway", "foyer", "entrance hall"],
    "library": ["library", "library", "reading room"],
}
OBJECT_NAMES: dict[str, list[str]] = {
    "sofa": ["sofa", "couch", "couch"],
    "tv": ["tv", "television", "tv"],
    "fridge": ["fridge", "refrigerator", "fridge"],
    "oven": ["oven", "stove"],
    "plant": ["plant", "potted plant", "plant"],
    "painting": ["painting", "picture", "painting", "artwork"],
    "rug": ["rug", "carpet", "rug"],
    "bookshelf": ["bookshelf", "bookcase", "book shelf"],
    "nightstand": ["nightstand", "night stand", "bedside table"],
    "counter": ["counter", "kitchen counter", "counter"],
    "wardrobe": ["wardrobe", "armoire"],
    "dresser": ["dresser", "chest of drawers", "dresser"],
    "chair": ["chair", "chair", "chairs"],
    "trash can": ["trash can", "garbage can", "bin"],
    "bathtub": ["bathtub", "tub", "bath tub"],
    "toilet": ["toilet", "toilet"],
    "washing machine": ["washing machine", "washer"],
    "coat rack": ["coat rack", "coat stand"],
    "exercise bike": ["exercise bike", "stationary bike"],
    "weight rack": ["weight rack", "weights"],
    "chandelier": ["chandelier", "light fixture"],
}
# Loose names a person may use instead of the exact one.
LOOSE_NAMES: dict[str, str] = {
    "coffee table": "table",
    "side table": "table",
    "console table": "table",
    "dining table": "table",
    "kitchen island": "counter",
    "nightstand": "table",
    "armchair": "chair",
    "sofa": "chair",
    "wardrobe": "cabinet",
    "dresser": "cabinet",
    "filing cabinet": "cabinet",
    "bookshelf": "shelf",
    "shower": "tub",
    "bathtub": "shower",
    "dryer": "washer",
    "washing machine": "dryer",
    "painting": "mirror",
    "mirror": "painting",
}
# How likely an annotator is to use an object as a landmark (big and distinctive scores high).
SALIENCE: dict[str, float] = {
    "bed": 1.0, "sofa": 1.0, "piano": 1.0, "fireplace": 1.0, "pool table": 1.0, "bathtub": 0.9,
    "fridge": 0.9, "dining table": 0.9, "kitchen island": 0.9, "tv": 0.8, "toilet": 0.8, "treadmill": 0.9,
    "shower": 0.8, "desk": 0.8, "bookshelf": 0.8, "wardrobe": 0.7, "washing machine": 0.8, "table": 0.7,
    "painting": 0.7, "plant": 0.6, "armchair": 0.7, "coffee table": 0.6, "counter": 0.6, "sink": 0.7,
    "oven": 0.6, "chandelier": 0.6, "mirror": 0.5, "dresser": 0.5, "cabinet": 0.4, "lamp": 0.4,
    "chair": 0.4, "rug": 0.3, "nightstand": 0.3, "trash can": 0.1, "laundry basket": 0.1, "yoga mat": 0.2,
}  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One edge of the path: the turn before it, the rooms it enters and what it passes."""

    turn: float  # degrees, clockwise positive (right), in (-180, 180]
    rooms: tuple[int, ...]  # rooms newly entered while walking this edge
    door: bool  # a doorway is crossed or reached
    landmark: int  # object index passed, -1 when none stands out
    side: str  # "left", "right" or "ahead"
    doors_passed: int = 0  # doorways walked past (not through) to either side


@dataclass(frozen=True)
class PathDescription:
    """Everything an annotator would say about a path."""

    start_room: int
    steps: tuple[Step, ...]
    goal_room: int
    goal_door_room: int  # when the path ends in a doorway: the room that doorway opens into, else -1
    stop_object: int  # object to stop by, -1 when none is close
    stop_side: str  # "front", "left", "right" or "near"


def heading_of(dx: float, dy: float) -> float:
    """R2R heading of a direction: 0 faces +y, clockwise positive (radians)."""
    return math.atan2(dx, dy)


def relative_turn(from_heading: float, to_heading: float) -> float:
    """Signed degrees turning from one heading to another; positive is a right turn."""
    delta = (math.degrees(to_heading - from_heading) + 180.0) % 360.0 - 180.0
    return 180.0 if delta == -180.0 else delta


def describe_path(
    house: House, viewpoints: Sequence[Viewpoint], path: Sequence[int], heading: float
) -> PathDescription:
    """Facts of the path ``path`` (viewpoint indices) starting with the given heading (radians)."""
    if len(path) < 2:
        raise ValueError(f"scan {house.scan}: a path needs at least two viewpoints, got {len(path)}")
    xy = np.array([[viewpoints[k].x, viewpoints[k].y] for k in path], dtype=np.float64)
    start = viewpoints[path[0]]
    current = start.room
    if start.door >= 0:
        # Starting in a doorway: the room one comes from is the one not walked into first.
        first = _rooms_along(house, xy[0], xy[1])
        pair = house.doors[start.door].rooms
        current = pair[1] if first and first[0] == pair[0] else pair[0]
    start_room = current
    steps = []
    used: set[int] = set()
    prev_heading = heading
    for k in range(len(path) - 1):
        p, q = xy[k], xy[k + 1]
        h = heading_of(*(q - p))
        entered = []
        for room in _rooms_along(house, p, q):
            if room != current:
                entered.append(room)
                current = room
        reaches_door = viewpoints[path[k + 1]].door >= 0
        landmark, side = _landmark(house, p, q, h, used)
        if landmark >= 0:
            used.add(landmark)
        passed = _doors_passed(house, p, q, h, {viewpoints[path[k]].door, viewpoints[path[k + 1]].door})
        turn = relative_turn(prev_heading, h)
        steps.append(Step(turn, tuple(entered), bool(entered) or reaches_door, landmark, side, passed))
        prev_heading = h
    goal = viewpoints[path[-1]]
    goal_door_room = -1
    if goal.door >= 0:
        a, b = house.doors[goal.door].rooms
        goal_door_room = b if current == a else a
    stop_object, stop_side = _stop_object(house, xy[-1], prev_heading, {current, goal_door_room}, used)
    return PathDescription(start_room, tuple(steps), current, goal_door_room, stop_object, stop_side)


def _rooms_along(house: House, p: np.ndarray, q: np.ndarray) -> list[int]:
    """Rooms crossed by the open segment ``p -> q`` in order (endpoints in doorways are ambiguous)."""
    count = max(3, math.ceil(float(np.linalg.norm(q - p)) / 0.2))
    t = (np.arange(count) + 0.5) / count
    rooms = house.rooms_at(p[None] + t[:, None] * (q - p)[None])
    out: list[int] = []
    for r in rooms:
        if r >= 0 and (not out or out[-1] != r):
            out.append(int(r))
    return out


def _side(p: np.ndarray, heading: float, point: np.ndarray) -> tuple[float, float]:
    """Distance ahead and to the left of ``point`` for a walker at ``p`` facing ``heading``."""
    fwd = np.array([math.sin(heading), math.cos(heading)])
    rel = point - p
    return float(rel @ fwd), float(fwd[0] * rel[1] - fwd[1] * rel[0])


def _landmark(house: House, p: np.ndarray, q: np.ndarray, heading: float, used: set[int]) -> tuple[int, str]:
    """The most noticeable object passed close to the segment ``p -> q`` and its side."""
    length = float(np.linalg.norm(q - p))
    rooms = set(_rooms_along(house, p, q))
    best, best_score, best_side = -1, 0.25, "ahead"
    for obj in house.objects:
        if obj.index in used or obj.room not in rooms:
            continue
        ahead, left = _side(p, heading, np.array([obj.x, obj.y]))
        if not -0.3 <= ahead <= length + 0.8:
            continue
        lateral = abs(left) - min(obj.width, obj.depth) / 2
        if lateral > 1.8:
            continue
        score = SALIENCE.get(obj.category, 0.5) - 0.25 * max(lateral, 0.0)
        if score > best_score:
            best, best_score = obj.index, score
            best_side = (
                "ahead" if abs(left) < 0.4 and ahead > length * 0.7 else ("left" if left > 0 else "right")
            )
    return best, best_side


def _doors_passed(house: House, p: np.ndarray, q: np.ndarray, heading: float, skip: set[int]) -> int:
    """Doorways beside the segment ``p -> q`` that the walker goes by without using."""
    length = float(np.linalg.norm(q - p))
    count = 0
    for door in house.doors:
        if door.index in skip:
            continue
        ahead, left = _side(p, heading, np.array([door.x, door.y]))
        if 0.3 < ahead < length - 0.3 and 0.3 < abs(left) < 1.5:
            count += 1
    return count


def _stop_object(
    house: House, goal: np.ndarray, heading: float, rooms: set[int], used: set[int]
) -> tuple[int, str]:
    """A salient object near the goal (in the goal room or the doorway's rooms) and where it is."""
    best, best_score, best_side = -1, 0.0, "near"
    for obj in house.objects:
        if obj.room not in rooms:
            continue
        centre = np.array([obj.x, obj.y])
        gap = float(np.linalg.norm(centre - goal)) - min(obj.width, obj.depth) / 2
        if gap > 2.2:
            continue
        # Objects already used as landmarks on the way are less informative for the stop.
        score = SALIENCE.get(obj.category, 0.5) - 0.3 * max(gap, 0.0) - 0.3 * (obj.index in used)
        if score > best_score:
            ahead, left = _side(goal, heading, centre)
            best, best_score = obj.index, score
            if ahead > abs(left):
                best_side = "front"
            elif abs(left) > 0.6 and ahead > -abs(left):  # clearly to one side, not behind
                best_side = "left" if left > 0 else "right"
            else:
                best_side = "near"
    return best, best_side


# ------------------------------------------------------------------------------------- wording


@dataclass(frozen=True)
class Style:
    """How one annotator writes: detail, sentence structure, punctuation and sloppiness."""

    detail: float  # chance of mentioning a landmark passed on a step
    turn_detail: float  # chance of mentioning a turn that a doorway already makes obvious
    filler: float  # chance of a plain "walk forward" clause where nothing else happens
    sentence_break: float  # chance that a new clause starts a new sentence
    lowercase: bool
    final_period: bool
    imprecision: float  # scales the rates of omitted/softened turns and loose names

    @staticmethod
    def sample(rng: np.random.Generator) -> Style:
        return Style(
            detail=float(rng.choice([0.1, 0.25, 0.5], p=[0.35, 0.4, 0.25])),
            turn_detail=float(rng.uniform(0.2, 0.9)),
            filler=float(rng.choice([0.15, 0.4, 0.8])),
            sentence_break=float(rng.uniform(0.2, 0.75)),
            lowercase=bool(rng.random() < 0.1),
            final_period=bool(rng.random() < 0.85),
            imprecision=float(rng.uniform(0.5, 1.5)),
        )


_TURN = {
    "around": ["turn around", "turn around", "turn all the way around", "turn back around", "do a u-turn",
               "turn to face the other way", "spin around"],
    "turn": ["turn {d}", "turn {d}", "make a {d}", "take a {d}", "go {d}", "turn to your {d}", "hang a {d}",
             "make a {d} turn", "head {d}", "swing {d}"],
    "slight": ["turn slightly {d}", "bear {d}", "veer {d}", "go slightly {d}", "take a slight {d}",
               "make a slight {d}", "curve {d}", "angle {d}"],
}  # fmt: skip
_EXIT = ["exit the {r}", "walk out of the {r}", "leave the {r}", "go out of the {r}", "head out of the {r}",
         "exit the {r} through the door", "walk out the door of the {r}", "make your way out of the {r}",
         "step out of the {r}", "get out of the {r}"]  # fmt: skip
_EXIT_INTO = ["exit the {r} into the {r2}", "walk out of the {r} into the {r2}", "leave the {r} and enter the {r2}",
              "go out of the {r} and into the {r2}", "exit the {r} and go into the {r2}",
              "walk from the {r} into the {r2}", "leave the {r} for the {r2}"]  # fmt: skip
_ENTER = ["enter the {r}", "go into the {r}", "walk into the {r}", "go through the doorway into the {r}",
          "walk through the door into the {r}", "head into the {r}", "step into the {r}", "continue into the {r}",
          "go in the {r}", "proceed into the {r}", "make your way into the {r}", "walk in to the {r}"]  # fmt: skip
_ENTER_SIDE = ["take the door on your {d} into the {r}", "enter the {r} on your {d}", "go into the {r} on the {d}",
               "turn {d} into the {r}", "go {d} through the doorway into the {r}"]  # fmt: skip
_TO_DOOR = ["walk to the doorway", "go to the door", "head toward the doorway", "walk through the doorway",
            "go through the door", "head for the door", "go through the opening"]  # fmt: skip
_HALL = ["walk down the {r}", "go down the {r}", "walk along the {r}", "continue down the {r}", "head down the {r}",
         "follow the {r}", "proceed down the {r}"]  # fmt: skip
_WALK = ["walk forward", "go straight", "walk straight ahead", "continue forward", "keep walking", "go forward",
         "walk ahead", "move forward", "walk across the {r}", "go through the {r}", "cross the {r}",
         "keep going straight", "proceed forward", "continue straight", "walk a few steps forward",
         "head straight"]  # fmt: skip
_PASS = ["past the {o}", "passing the {o}", "past the {o} on your {s}", "with the {o} on your {s}",
         "by the {o}", "passing the {o} on the {s}", "alongside the {o}", "keeping the {o} to your {s}"]  # fmt: skip
_TOWARD = ["toward the {o}", "towards the {o}", "to the {o}", "up to the {o}", "in the direction of the {o}"]
_STOP_AT = {
    "front": ["stop in front of the {o}", "wait in front of the {o}", "stop when you reach the {o}",
              "stop right before the {o}", "stand in front of the {o}", "halt in front of the {o}",
              "stop just short of the {o}"],
    "near": ["stop next to the {o}", "wait by the {o}", "stop near the {o}", "stand beside the {o}",
             "wait next to the {o}", "stop by the {o}", "stop close to the {o}", "wait near the {o}"],
    "side": ["stop with the {o} on your {s}", "wait with the {o} to your {s}", "stop when the {o} is on your {s}",
             "stop next to the {o}", "stand with the {o} at your {s}"],
}  # fmt: skip
_STOP_ROOM = ["stop in the {r}", "wait in the {r}", "stop once you are in the {r}", "stop just inside the {r}",
              "wait inside the {r}", "stop in the middle of the {r}", "stop as soon as you enter the {r}",
              "wait once you get to the {r}"]  # fmt: skip
_STOP_DOOR = ["stop in the doorway of the {r}", "wait in the doorway to the {r}", "stop at the entrance to the {r}",
              "wait at the door of the {r}", "stop in the {r} doorway", "stand in the doorway to the {r}",
              "stop right at the door to the {r}"]  # fmt: skip
_STOP_VAGUE = ["stop there", "wait there", "stop"]
_JOIN = [" and ", ", then ", " then ", ", ", " and then ", ", and "]
_OPENERS = ["", "", "", "then ", "next, ", "after that, ", "now ", "from there, "]
_STOP_OPENERS = ["", "", "", "then ", "finally, ", "once there, ", "and "]


def write_instruction(house: House, description: PathDescription, rng: np.random.Generator) -> str:
    """One instruction for a described path, in a freshly drawn style."""
    style = Style.sample(rng)
    clauses = _clauses(house, description, style, rng)
    return _punctuate(clauses, style, rng)


def generate_instructions(
    house: House,
    viewpoints: Sequence[Viewpoint],
    path: Sequence[int],
    heading: float,
    rng: np.random.Generator,
    count: int = 3,
) -> list[str]:
    """``count`` distinct instructions for one path, each written in its own style."""
    description = describe_path(house, viewpoints, path, heading)
    out: list[str] = []
    for _ in range(count * 10):
        text = write_instruction(house, description, rng)
        if text not in out:
            out.append(text)
        if len(out) == count:
            return out
    raise RuntimeError(
        f"scan {house.scan}: could not write {count} distinct instructions for path {list(path)}"
    )


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _room(house: House, index: int, rng: np.random.Generator) -> str:
    room = house.rooms[index]
    name = _pick(rng, ROOM_NAMES.get(room.type, [room.type]))
    if room.type != "hallway" and rng.random() < 0.12:
        if room.area < 9.0:
            name = f"{_pick(rng, ['small', 'little', 'tiny'])} {name}"
        elif room.area > 24.0:
            name = f"{_pick(rng, ['large', 'big', 'spacious'])} {name}"
    return name


def _object(house: House, index: int, rng: np.random.Generator, style: Style) -> str:
    category = house.objects[index].category
    if category in LOOSE_NAMES and rng.random() < 0.06 * style.imprecision:
        return LOOSE_NAMES[category]
    return _pick(rng, OBJECT_NAMES.get(category, [category]))


def _turn_kind(turn: float, style: Style, rng: np.random.Generator) -> tuple[str, str] | None:
    """``(kind, direction)`` of the turn as this annotator would put it, or None when unsaid."""
    magnitude = abs(turn)
    if magnitude < SLIGHT_TURN:
        return None
    kind = "around" if magnitude >= TURN_AROUND else ("turn" if magnitude >= TURN else "slight")
    if kind == "slight" and rng.random() < 0.5:  # gentle bends mostly go unmentioned
        return None
    sloppy = style.imprecision
    if rng.random() < 0.06 * sloppy:  # omitted
        return None
    if kind == "turn" and rng.random() < 0.06 * sloppy:  # softened
        kind = "slight"
    direction = "right" if turn > 0 else "left"
    if kind != "around" and rng.random() < 0.015 * sloppy:  # the rare swapped side
        direction = "left" if direction == "right" else "right"
    return kind, direction


def _clauses(house: House, d: PathDescription, style: Style, rng: np.random.Generator) -> list[str]:
    """Clauses in path order; steps without anything to say fold into the previous clause."""
    clauses: list[str] = []
    here = d.start_room
    left_start = False
    for k, step in enumerate(d.steps):
        turn = _turn_kind(step.turn, style, rng)
        # A turn through a doorway is often left implicit, and slight ones usually are.
        if (
            turn
            and step.door
            and k > 0
            and rng.random() > style.turn_detail * (0.4 if turn[0] == "slight" else 1)
        ):
            turn = None
        parts: list[str] = []
        move = None
        if step.rooms:
            target = step.rooms[-1]
            first_exit = not left_start and house.rooms[here].type != "hallway"
            r, r2 = _room(house, here, rng), _room(house, target, rng)
            if first_exit and rng.random() < 0.5:
                move = _pick(rng, _EXIT_INTO).format(r=r, r2=r2)
            elif first_exit:
                move = _pick(rng, _EXIT).format(r=r)
            elif turn and turn[0] == "turn" and rng.random() < 0.5:
                move, turn = _pick(rng, _ENTER_SIDE).format(d=turn[1], r=r2), None
            else:
                move = _pick(rng, _ENTER).format(r=r2)
            left_start, here = True, target
        elif step.door and rng.random() < 0.2:
            move = _pick(rng, _TO_DOOR)
        elif (k == 0 or turn or step.doors_passed) and rng.random() < style.filler:
            move = _motion(house, here, step, rng)
        if turn:
            parts.append(_pick(rng, _TURN[turn[0]]).format(d=turn[1]))
        if step.landmark >= 0 and rng.random() < style.detail:
            name = _object(house, step.landmark, rng, style)
            phrase = _pick(rng, _TOWARD if step.side == "ahead" else _PASS).format(o=name, s=step.side)
            move = f"{move or _pick(rng, _WALK).format(r=_room(house, here, rng))} {phrase}"
        if move:
            parts.append(move)
        if parts:
            clauses.append((" and " if rng.random() < 0.5 else ", ").join(parts))
    if not clauses:
        # Nothing happened on the way (a straight walk inside one room): say how to walk anyway.
        clauses.append(_motion(house, here, d.steps[0], rng))
    clauses.append(_stop_clause(house, d, style, rng))
    return clauses


def _motion(house: House, here: int, step: Step, rng: np.random.Generator) -> str:
    """A plain walking clause, mentioning the doorways passed on the way now and then."""
    text = _pick(rng, _HALL if house.rooms[here].type == "hallway" else _WALK).format(
        r=_room(house, here, rng)
    )
    if step.doors_passed and rng.random() < 0.5:
        count = {1: "a door", 2: "two doors", 3: "three doors"}.get(step.doors_passed, "several doors")
        text += f" {_pick(rng, ['past', 'passing'])} {count}"
    return text


def _stop_clause(house: House, d: PathDescription, style: Style, rng: np.random.Generator) -> str:
    if rng.random() < 0.03 * style.imprecision:
        return _pick(rng, _STOP_VAGUE)
    if d.goal_door_room >= 0 and (d.stop_object < 0 or rng.random() < 0.6):
        return _pick(rng, _STOP_DOOR).format(r=_room(house, d.goal_door_room, rng))
    if d.stop_object >= 0 and rng.random() < 0.85:
        name = _object(house, d.stop_object, rng, style)
        if d.stop_side in ("left", "right"):
            text = _pick(rng, _STOP_AT["side"]).format(o=name, s=d.stop_side)
        else:
            text = _pick(rng, _STOP_AT[d.stop_side]).format(o=name)
        if house.objects[d.stop_object].room == d.goal_room and rng.random() < 0.2:
            text += f" in the {_room(house, d.goal_room, rng)}"
        return text
    return _pick(rng, _STOP_ROOM).format(r=_room(house, d.goal_room, rng))


def _punctuate(clauses: list[str], style: Style, rng: np.random.Generator) -> str:
    """Join clauses into sentences with varied connectives, capitals and full stops."""
    sentences: list[str] = []
    current = ""
    for k, clause in enumerate(clauses):
        last = k == len(clauses) - 1
        if not current:
            current = clause
        elif rng.random() < style.sentence_break:
            sentences.append(current)
            current = _pick(rng, _STOP_OPENERS if last else _OPENERS) + clause
        else:
            current += _pick(rng, _JOIN) + clause
    sentences.append(current)
    text = ". ".join(s if style.lowercase else s[0].upper() + s[1:] for s in sentences)
    return text + ("." if style.final_period else "")

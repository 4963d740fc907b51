"""Draw one navigation episode: a top-down map (PNG) and/or what the agent saw (animated GIF).

    python scripts/render_episode.py --data data/nav/small --split val_unseen --episode 12_0 \\
        [--trajectory preds.json] --out map.png --out walk.gif

``--episode`` is a path id (instruction 0) or an instruction id ``<path_id>_<k>``. The trajectory is
taken from an R2R submission file when given (the entry of that instruction id), otherwise the
reference path is drawn as the agent's path. The output kind follows each ``--out`` suffix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.eval.metrics import load_predictions
from lodestar.envs.nav.perception.viz import episode_frames, episode_text, top_down_map
from lodestar.envs.nav.world.build import load_house
from lodestar.runtime.cli import run_main
from lodestar.runtime.logger import encode_gif

SUFFIXES = (".png", ".gif")


def find_episode(episodes: list[Episode], wanted: str, source: str) -> tuple[Episode, int]:
    """The episode and instruction index named by a path id or an instruction id."""
    by_path = {str(ep.path_id): ep for ep in episodes}
    if wanted in by_path:
        return by_path[wanted], 0
    path_id, sep, k = wanted.rpartition("_")
    if sep and path_id in by_path and k.isdigit():
        episode = by_path[path_id]
        if int(k) >= len(episode.instructions):
            raise KeyError(
                f"{source}: episode {path_id} has {len(episode.instructions)} instructions, no #{k}"
            )
        return episode, int(k)
    raise KeyError(f"{source}: no episode with path id or instruction id {wanted!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw a navigation episode as a map (PNG) and/or a GIF.")
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset directory built by build_nav_world.py"
    )
    parser.add_argument("--split", default="val_unseen")
    parser.add_argument("--episode", required=True, help="path id or instruction id (<path_id>_<k>)")
    parser.add_argument("--trajectory", type=Path, help="R2R submission JSON with the agent's trajectory")
    parser.add_argument(
        "--out", type=Path, action="append", required=True, help="output .png (map) or .gif (frames)"
    )
    parser.add_argument("--map-size", type=int, default=512, help="longer side of the map in pixels")
    parser.add_argument("--fps", type=float, default=2.0, help="GIF frames per second")
    parser.add_argument("--device", default="cpu", help="device to render on")
    args = parser.parse_args(argv)

    bad = [str(p) for p in args.out if p.suffix.lower() not in SUFFIXES]
    if bad:
        raise ValueError(f"--out must end in {' or '.join(SUFFIXES)}, got {bad}")
    dataset = NavDataset(args.data)
    episode, k = find_episode(dataset.episodes(args.split), args.episode, f"R2R_{args.split}.json")
    instr_id = episode.instr_id(k)
    trajectory: list[str] = list(episode.path)
    if args.trajectory is not None:
        predictions = load_predictions(args.trajectory)
        if instr_id not in predictions:
            raise KeyError(f"{args.trajectory}: no trajectory for instruction {instr_id}")
        trajectory = predictions[instr_id]
    graph = dataset.graph(episode.scan)
    house, _ = load_house(args.data, episode.scan)
    for out in args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".png":
            Image.fromarray(top_down_map(house, graph, episode.path, trajectory, size=args.map_size)).save(
                out
            )
        else:
            frames = episode_frames(
                house, graph, trajectory, episode.heading, episode.instructions[k], args.device
            )
            out.write_bytes(encode_gif(frames, args.fps))
        print(f"wrote {out}")
    print(episode_text(graph, episode, k, trajectory), file=sys.stdout)
    return 0


if __name__ == "__main__":
    run_main(main)

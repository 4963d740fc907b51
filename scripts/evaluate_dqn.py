"""Evaluate DQN checkpoints under the standard Atari protocol.

    python scripts/evaluate_dqn.py --checkpoint runs/<name> --episodes 30 --out result.json --video eval.gif
    python scripts/evaluate_dqn.py --games runs/pong-s1 runs/pong-s2 runs/breakout-s1 --out summary.json

Default protocol ``v5``: full games (all lives), raw rewards, sticky actions 0.25, no no-op starts,
108k-frame cap, epsilon 0.001. ``--protocol config`` uses the run's own eval settings instead
(e.g. the Atari-100k protocol of ``configs/dqn_atari100k.yaml``). Prints mean/median/std and the
human-normalized score per checkpoint; with several checkpoints also the IQM, median, mean and
optimality gap of human-normalized scores over the runs x games matrix, with 95% stratified-bootstrap
confidence intervals computed as the rliable package computes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from lodestar.agents.dqn.evaluation import evaluate, load_agent, record_video, video_fps
from lodestar.agents.dqn.scores import METRICS, aggregate_with_ci, human_normalized, score_matrix
from lodestar.envs.atari import resolve_game
from lodestar.runtime.cli import positive_int, run_main
from lodestar.runtime.device import resolve_device
from lodestar.runtime.logger import encode_gif


def evaluate_checkpoint(path: Path, args: argparse.Namespace) -> dict:
    agent, config = load_agent(path, resolve_device(args.device))
    if args.protocol == "v5":
        config.eval.repeat_action_probability = 0.25
        config.eval.noop_max = 0
        config.eval.max_episode_frames = 108_000
    returns = evaluate(
        agent,
        config,
        args.episodes,
        seed=args.seed,
        epsilon=args.epsilon,
        num_envs=args.num_envs,
        show_progress=True,
    )
    mean = statistics.fmean(returns)
    result = {
        "checkpoint": str(path),
        "game": resolve_game(config.env.game),
        "seed": config.seed,
        "protocol": args.protocol,
        "epsilon": args.epsilon,
        "episodes": len(returns),
        "mean": mean,
        "median": statistics.median(returns),
        "std": statistics.pstdev(returns),
        "returns": returns,
    }
    try:
        result["human_normalized"] = human_normalized(config.env.game, mean)
    except KeyError:
        result["human_normalized"] = None
    if args.video is not None:
        frames = record_video(
            agent, config, seed=args.seed, max_steps=config.eval.video_max_steps, show_progress=True
        )
        video_path = (
            args.video
            if len(args.checkpoints) == 1
            else args.video.with_stem(f"{args.video.stem}_{path.name}")
        )
        video_path.write_bytes(encode_gif(frames, fps=video_fps(config)))
        result["video"] = str(video_path)
    return result


def aggregate(results: list[dict]) -> dict:
    """IQM, median, mean and optimality gap of the human-normalized scores over the runs x games
    matrix, with 95% stratified-bootstrap intervals (rliable's estimators, see ``scores.py``).

    The bootstrap needs as many runs of every game: a game with more runs than the fewest contributes
    its first ones, and ``runs_left_out`` counts the others.
    """
    by_game: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r["human_normalized"] is not None:
            by_game[r["game"]].append(r["human_normalized"])
    runs = min(len(v) for v in by_game.values())
    matrix, games = score_matrix({game: values[:runs] for game, values in by_game.items()})
    estimates = aggregate_with_ci(matrix, METRICS)
    return {
        "games": games,
        "runs_per_game": runs,
        "runs_left_out": sum(len(values) - runs for values in by_game.values()),
        **{name: {"value": e.value, "ci95": [e.low, e.high]} for name, e in estimates.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate DQN checkpoints on Atari.")
    parser.add_argument(
        "--checkpoint",
        "--games",
        nargs="+",
        type=Path,
        dest="checkpoints",
        required=True,
        help="run directories or checkpoint files (several games/seeds aggregate)",
    )
    parser.add_argument("--episodes", type=positive_int, default=30, help="episodes per checkpoint (>= 1)")
    parser.add_argument("--epsilon", type=float, default=0.001)
    parser.add_argument("--protocol", choices=["v5", "config"], default="v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=positive_int, default=8, help="evaluation envs run at once (>= 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--video",
        type=Path,
        help="write an animated GIF of one evaluation episode here (its first eval.video_max_steps "
        "agent steps, in real game time)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    results = [evaluate_checkpoint(path, args) for path in args.checkpoints]
    print(f"{'game':<16}{'seed':>5}{'episodes':>9}{'mean':>10}{'median':>10}{'std':>9}{'HNS':>8}")
    for r in results:
        hns = "-" if r["human_normalized"] is None else f"{r['human_normalized']:.3f}"
        print(
            f"{r['game']:<16}{r['seed']:>5}{r['episodes']:>9}{r['mean']:>10.1f}{r['median']:>10.1f}{r['std']:>9.1f}{hns:>8}"
        )
    output: dict = {"results": results}
    if len(results) > 1 and any(r["human_normalized"] is not None for r in results):
        output["aggregate"] = summary = aggregate(results)
        if summary["runs_left_out"]:
            print(
                f"note: the aggregate uses the first {summary['runs_per_game']} run(s) of every game; "
                f"{summary['runs_left_out']} run(s) of games with more are left out of it"
            )
        for name in METRICS:
            lo, hi = summary[name]["ci95"]
            print(f"HNS {name:<15}{summary[name]['value']:.3f}  (95% CI {lo:.3f} .. {hi:.3f})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(output, indent=2))
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)

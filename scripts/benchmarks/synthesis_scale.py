"""``synthesis-scale``: how fast the speaker labels trajectories, and what 200,000 of them cost.

Figures (all against references measured in the same run):

- instructions labelled per second, greedy and sampling, batched on the device (``batch_size``
  paths at once), against the same speaker labelling one path at a time, the way a per-episode
  code base runs its speaker;
- end-to-end wall time of :func:`lodestar.pretrain.synthesis.synthesize` (plan, featurize, decode, write the
  R2R JSON and the trajectory store) for ``paths`` x ``decodes`` sampled instructions, scaled to
  ``target_instructions`` (200,000) when the run is smaller (the metric name says so); target under
  30 minutes, reference the one-path-at-a-time rate for the same count;
- disk size of the outputs for ``target_instructions`` instructions next to the human
  ``R2R_train.json`` at the same count.

The speaker has the default size of ``configs/vln_speaker.yaml``; unless ``speaker=<path>`` is given
it is trained briefly here (``iterations``, default 200) so that its instructions have realistic
lengths (the mean length is reported).

Options: ``data=<dir>`` (default ``data/nav/benchmark``), ``features=cnn``, ``speaker=<path>``,
``iterations=200``, ``paths=40000``, ``decodes=5``, ``batch_size=256``, ``sample_paths=2048``
(rate measurements), ``reference_paths=64``, ``target_instructions=200000``, ``threads=1``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.speaker_common import benchmark_data, train_speaker
from lodestar.agents.vln.speaker import load_speaker
from lodestar.agents.vln.trajectories import InstructionSet, PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.pretrain.synthesis import SynthesisConfig, split_file, store_files, synthesize, work_dir
from lodestar.runtime.bench import Figure, report

BENCHMARK = "synthesis-scale"
SPLIT = "bench_synthesis"


def labelling_rate(
    model, featurizer, paths, batch: int, mode: str, decodes: int, seed: int = 0
) -> tuple[float, float]:
    """Instructions per second over ``paths`` decoded ``batch`` paths at a time, and their mean length."""
    generator = torch.Generator().manual_seed(seed)
    count, tokens = 0, 0
    num_return = decodes if mode == "sample" else 1
    started = time.perf_counter()
    for start in range(0, len(paths), batch):
        index = torch.arange(start, min(start + batch, len(paths)))
        out = model.generate(
            featurizer(paths.select(index)), mode, max_len=80, num_return=num_return, generator=generator
        )
        count += out.tokens.shape[0]
        tokens += int(out.lengths.sum())
    return count / (time.perf_counter() - started), tokens / max(count, 1)


def output_bytes(root: Path, split: str) -> int:
    store, meta = store_files(root, split)
    return sum(p.stat().st_size for p in (split_file(root, split), store, meta))


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    torch.set_num_threads(int(options.get("threads", 1)))
    paths = int(options.get("paths", 300 if quick else 40_000))
    decodes = int(options.get("decodes", 2 if quick else 5))
    batch = int(options.get("batch_size", 256))
    sample_paths = int(options.get("sample_paths", 256 if quick else 2048))
    reference_paths = int(options.get("reference_paths", 16 if quick else 64))
    target_count = int(options.get("target_instructions", 200_000))
    with tempfile.TemporaryDirectory() as tmp:
        root, features, label = benchmark_data(quick, options, Path(tmp))
        if "speaker" in options:
            speaker_path = Path(options["speaker"])
        else:
            iterations = options.get("iterations", "20" if quick else "200")
            overrides = [
                f"iterations={iterations}",
                f"eval_every={iterations}",
                f"checkpoint_every={iterations}",
            ]
            # The default model size even in --quick: throughput is what is measured here.
            quick_size = ["model.embed_dim=128", "model.hidden_dim=256"] if quick else []
            speaker_path, _ = train_speaker(
                root, features, Path(tmp) / "speaker", overrides + quick_size, quick
            )
        bundle = load_speaker(speaker_path)
        model = bundle.model
        dataset = NavDataset(root)
        episodes = dataset.episodes("train")
        pool = (episodes * (1 + sample_paths // len(episodes)))[:sample_paths]
        featurizer = PathFeaturizer.from_dataset(
            dataset,
            sorted({ep.scan for ep in episodes}),
            bundle.features,
            "cpu",
            bundle.angle_feature_size,
            getattr(torch, SynthesisConfig().feature_dtype),  # as synthesis stores them
        )
        routes = InstructionSet.build(pool, featurizer, bundle.vocab, bundle.max_instruction_len).paths
        few = routes.select(torch.arange(min(reference_paths, len(pool))))
        rates = {}
        for mode in ("greedy", "sample"):
            batched, mean_len = labelling_rate(model, featurizer, routes, batch, mode, decodes)
            single, _ = labelling_rate(model, featurizer, few, 1, mode, 1)
            rates[mode] = (batched, single, mean_len)

        shutil.rmtree(work_dir(root, SPLIT), ignore_errors=True)
        config = SynthesisConfig(
            split_name=SPLIT,
            paths=paths,
            decodes_per_path=decodes,
            decoding="sample",
            batch_size=batch,
            device="cpu",
        )
        started = time.perf_counter()
        result = synthesize(root, speaker_path, config, overwrite=True)
        wall = time.perf_counter() - started
        size = output_bytes(root, SPLIT)
        human = split_file(root, "train").stat().st_size / sum(len(ep.instructions) for ep in episodes)
        for path in (split_file(root, SPLIT), *store_files(root, SPLIT)):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder stays when it holds other stores
            store_files(root, SPLIT)[0].parent.rmdir()
    made = result.paths * decodes
    scale = target_count / made
    scaled = "" if made >= target_count else f" (extrapolated from {made:,})"
    print(
        f"speaker {speaker_path} on {label}: greedy mean length {rates['greedy'][2]:.1f} tokens, "
        f"sampled {rates['sample'][2]:.1f}; end-to-end {made:,} instructions in {wall:.1f} s"
    )
    figures = [
        Figure(
            BENCHMARK,
            f"{mode} instructions/s (batch {batch}{', ' + str(decodes) + ' per path' if mode == 'sample' else ''})",
            round(batched, 1),
            "instr/s",
            reference="same speaker, one path at a time",
            reference_value=round(single, 2),
            target=10.0,
        )
        for mode, (batched, single, _) in rates.items()
    ]
    figures.append(
        Figure(
            BENCHMARK,
            f"wall time for {target_count:,} sampled instructions{scaled}",
            round(wall * scale, 1),
            "s",
            reference="one path at a time (sampling rate)",
            reference_value=round(target_count / rates["sample"][1], 1),
            target=1800.0,
            higher_is_better=False,
            target_on="value",
        )
    )
    figures.append(
        Figure(
            BENCHMARK,
            f"disk for {target_count:,} instructions (R2R JSON + trajectory store){scaled}",
            round(size * scale / 1e6, 1),
            "MB",
            reference="human R2R_train.json at the same count",
            reference_value=round(human * target_count / 1e6, 1),
            higher_is_better=False,
        )
    )
    report(figures, f"synthesis-scale ({label})")
    return figures

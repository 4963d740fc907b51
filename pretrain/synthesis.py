"""Speaker-based synthesis: sample R2R-rule paths, write instructions for them with the speaker.

``synthesize(data_dir, speaker, config)`` produces

- ``<data>/R2R_<split>.json`` (default split ``synthetic``): R2R episodes, ``decodes_per_path``
  instructions each, path ids from ``path_id_offset`` on so they never clash with human ids;
- ``<data>/trajectories/<split>.pt``: a :class:`lodestar.replay.trajectory.TrajectoryStore` with one episode
  per (path, instruction): the instruction tokens (``<BOS> ... <EOS>``), the global viewpoint index
  of each step and the action taken there (candidate slot in graph order, ``max_degree`` = STOP),
  plus a ``headings`` per-step extra;
- ``<data>/trajectories/<split>.json``: what the store's indices mean (the scans in packing order,
  ``max_degree``, the ``instr_id`` of every stored episode) and a report of the run.

Paths come from the houses of the human ``train`` split and, with ``new_houses``, from freshly
generated houses (whose features are built with the perception feature builder).

The work is resumable. The first run writes a plan (options, speaker fingerprint, every path) into
``<data>/.synthesis_<split>/`` and then one file per chunk of paths, each written atomically; a rerun
with the same options skips finished chunks, so an interrupted run ends with no duplicate and no
missing path. Sampling draws from a generator seeded by (seed, chunk), so the result does not depend
on where a run was interrupted. The work folder is removed once the outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lodestar.agents.vln.speaker import DECODING_MODES, SpeakerBundle, load_speaker
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import Episode, write_r2r
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.world.episodes import SPLITS
from lodestar.pretrain.new_houses import add_houses, build_world_features
from lodestar.pretrain.path_sampling import PlannedPath, plan_paths, used_pairs
from lodestar.replay.trajectory import TrajectoryStore
from lodestar.runtime.checkpoint import atomic_save, load_file
from lodestar.runtime.device import resolve_device
from lodestar.runtime.progress import progress

PLAN_FILE = "plan.json"


@dataclass
class SynthesisConfig:
    """What to synthesize (the schema of ``configs/vln_synthesize.yaml``)."""

    split_name: str = "synthetic"
    paths: int = 10_000
    decodes_per_path: int = 1
    # Sampling: greedy decodes of a small speaker repeat a few templates (11% unique on `benchmark`).
    decoding: Literal["greedy", "sample", "beam"] = "sample"
    temperature: float = 1.0
    beam_size: int = 4
    length_penalty: float = 1.0
    max_len: int = 80
    new_houses: int = 0
    house_seed: int = 0
    seed: int = 0
    batch_size: int = 256  # paths decoded together
    chunk_size: int = 4096  # paths per resumable chunk
    path_id_offset: int = 10_000_000
    features: str | None = None  # default: the features the speaker was trained on
    feature_dtype: Literal["float32", "float16"] = "float32"
    device: str = "auto"
    torch_threads: int = 0

    def __post_init__(self) -> None:
        if self.split_name in SPLITS:
            raise ValueError(f"split_name {self.split_name!r} is a human split; choose another name")
        if not self.split_name or any(c in self.split_name for c in "/\\ "):
            raise ValueError(f"split_name {self.split_name!r} must be a plain file-name fragment")
        if self.decoding not in DECODING_MODES:
            raise ValueError(f"decoding must be one of {DECODING_MODES}, got {self.decoding!r}")
        for name in ("paths", "decodes_per_path", "max_len", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoding == "greedy" and self.decodes_per_path > 1:
            raise ValueError("greedy decoding gives one instruction per path: use --decoding sample or beam")
        if self.decoding == "beam" and self.decodes_per_path > self.beam_size:
            raise ValueError(f"decodes_per_path {self.decodes_per_path} exceeds beam_size {self.beam_size}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def plan_options(self) -> dict[str, Any]:
        """Settings that change the output; a resumed run must agree on all of them."""
        record = asdict(self)
        for key in ("device", "torch_threads"):
            record.pop(key)
        return record


@dataclass
class SynthesisReport:
    split: str
    complete: bool
    paths: int
    instructions: int
    chunks_done: int
    chunks_total: int
    new_scans: list[str]
    seconds: float  # decoding wall time of this call
    outputs: dict[str, str]

    @property
    def instructions_per_second(self) -> float:
        return self.instructions / self.seconds if self.seconds > 0 else 0.0


def split_file(root: Path, split: str) -> Path:
    return root / f"R2R_{split}.json"


def store_files(root: Path, split: str) -> tuple[Path, Path]:
    """The trajectory store and its metadata."""
    return root / "trajectories" / f"{split}.pt", root / "trajectories" / f"{split}.json"


def work_dir(root: Path, split: str) -> Path:
    return root / f".synthesis_{split}"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


class Synthesizer:
    """One synthesis job over a dataset directory (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | Path,
        speaker: str | Path,
        config: SynthesisConfig,
        overwrite: bool = False,
        show_progress: bool = True,
        feature_builder: Callable[[Path, str], None] = build_world_features,
    ) -> None:
        self.root = Path(data_dir)
        self.config = config
        self.overwrite = overwrite
        self.show_progress = show_progress
        self.feature_builder = feature_builder
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.device = resolve_device(config.device)
        self.dataset = NavDataset(self.root)
        out = split_file(self.root, config.split_name)
        if out.exists() and not overwrite:
            raise FileExistsError(
                f"{out} already exists: pass --overwrite to replace split {config.split_name!r}"
            )
        speaker_path = Path(speaker)
        speaker_path = speaker_path / "best.pt" if speaker_path.is_dir() else speaker_path
        self.bundle: SpeakerBundle = load_speaker(speaker_path, self.device)
        self.vocab: Vocab = self.bundle.vocab
        self.features = config.features or self.bundle.features
        self.options = {
            **config.plan_options(),
            "features": self.features,
            "speaker": file_digest(speaker_path),
        }
        self.work = work_dir(self.root, config.split_name)
        self.plan: list[PlannedPath] = []
        self.new_scans: list[str] = []
        self.chunks = 0

    def prepare(self) -> None:
        """Load the plan of an interrupted run, or make one (adding new houses and their features)."""
        self.plan, self.new_scans = self._load_or_make_plan()
        self.chunks = -(-len(self.plan) // self.config.chunk_size)

    # -- planning -----------------------------------------------------------------------------------
    def _load_or_make_plan(self) -> tuple[list[PlannedPath], list[str]]:
        plan_path = self.work / PLAN_FILE
        if plan_path.is_file():
            try:
                record = json.loads(plan_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                record = None
            if record is not None and record.get("options") == self.options:
                paths = [PlannedPath(s, a, b, h) for s, a, b, h in record["paths"]]
                return paths, list(record["new_scans"])
            if not self.overwrite:
                raise FileExistsError(
                    f"{self.work} holds an interrupted synthesis with other options (or an unreadable "
                    f"plan); rerun with the same options to resume it, or pass --overwrite to discard it"
                )
        if self.work.exists():
            shutil.rmtree(self.work)
        c = self.config
        new_scans = add_houses(self.root, c.new_houses, c.house_seed, self.show_progress)
        if new_scans:
            self.dataset = NavDataset(self.root)  # scans.txt changed
            self.feature_builder(self.root, self.features)
        human = [
            ep for split in SPLITS if split in self.dataset.splits for ep in self.dataset.episodes(split)
        ]
        train = self.dataset.episodes("train")
        scans = sorted({ep.scan for ep in train}) + new_scans
        graphs = [self.dataset.graph(scan) for scan in scans]
        paths = plan_paths(graphs, c.paths, c.seed, used_pairs(human))
        record = {
            "options": self.options,
            "new_scans": new_scans,
            "paths": [[p.scan, p.start, p.goal, p.heading] for p in paths],
        }
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = plan_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, plan_path)
        return paths, new_scans

    # -- decoding -----------------------------------------------------------------------------------
    def _chunk_file(self, chunk: int) -> Path:
        return self.work / f"chunk_{chunk:06d}.pt"

    def chunks_done(self) -> list[int]:
        return [i for i in range(self.chunks) if self._chunk_file(i).is_file()]

    def _featurizer(self) -> PathFeaturizer:
        scans = sorted({p.scan for p in self.plan})
        featurizer = PathFeaturizer.from_dataset(
            self.dataset,
            scans,
            self.features,
            self.device,
            self.bundle.angle_feature_size,
            getattr(torch, self.config.feature_dtype),
        )
        if featurizer.visual_dim != self.bundle.model.visual_dim:
            raise ValueError(
                f"features {self.features!r} are {featurizer.visual_dim} wide but the speaker was trained on "
                f"{self.bundle.model.visual_dim}-dimensional features"
            )
        return featurizer

    def _decode_chunk(self, featurizer: PathFeaturizer, chunk: int) -> dict[str, Any]:
        c = self.config
        planned = self.plan[chunk * c.chunk_size : (chunk + 1) * c.chunk_size]
        generator = torch.Generator(device=self.device).manual_seed(chunk_seed(c.seed, chunk))
        routes = [(p.scan, self._route(p), p.heading) for p in planned]
        paths = featurizer.index_paths(routes)
        token_rows = []
        for start in range(0, len(planned), c.batch_size):
            index = torch.arange(start, min(start + c.batch_size, len(planned)), device=self.device)
            decoded = self.bundle.model.generate(
                featurizer(paths.select(index)),
                c.decoding,
                max_len=c.max_len,
                num_return=c.decodes_per_path,
                temperature=c.temperature,
                beam_size=c.beam_size,
                length_penalty=c.length_penalty,
                generator=generator,
            )
            token_rows.append(decoded.tokens.to(torch.int32).cpu())
        width = max(t.shape[1] for t in token_rows)
        pad = self.vocab.pad_id
        tokens = torch.cat(
            [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad) for t in token_rows]
        )
        steps = featurizer(paths, with_pano=False)
        return {
            "chunk": chunk,
            "first_path": chunk * c.chunk_size,
            "tokens": tokens,
            "viewpoints": steps.viewpoints.cpu(),
            "actions": steps.actions.cpu(),
            "lengths": steps.lengths.cpu(),
            "headings": steps.headings.cpu(),
            "scans": featurizer.world.scans,
            "max_degree": featurizer.max_degree,
        }

    def _route(self, planned: PlannedPath) -> list[str]:
        return self.dataset.graph(planned.scan).shortest_path(planned.start, planned.goal)

    def run(self, max_chunks: int | None = None) -> SynthesisReport:
        """Decode the missing chunks (at most ``max_chunks`` of them), then write the outputs if all are done."""
        c = self.config
        if not self.plan:
            self.prepare()
        todo = [i for i in range(self.chunks) if not self._chunk_file(i).is_file()]
        if max_chunks is not None:
            todo = todo[:max_chunks]
        seconds, decoded = 0.0, 0
        if todo:
            featurizer = self._featurizer()
            before = min(len(self.chunks_done()) * c.chunk_size, len(self.plan)) * c.decodes_per_path
            bar = (
                progress(
                    total=len(self.plan) * c.decodes_per_path,
                    initial=before,
                    desc=f"synthesize {c.split_name}",
                    unit="instr",
                )
                if self.show_progress
                else None
            )
            for chunk in todo:
                began = time.perf_counter()
                result = self._decode_chunk(featurizer, chunk)
                seconds += time.perf_counter() - began
                decoded += int(result["tokens"].shape[0])
                atomic_save(result, self._chunk_file(chunk))
                if bar is not None:
                    bar.update(int(result["tokens"].shape[0]))
            if bar is not None:
                bar.close()
        done = self.chunks_done()
        report = SynthesisReport(
            split=c.split_name,
            complete=len(done) == self.chunks,
            paths=len(self.plan),
            instructions=decoded,
            chunks_done=len(done),
            chunks_total=self.chunks,
            new_scans=list(self.new_scans),
            seconds=seconds,
            outputs={},
        )
        if report.complete:
            report.outputs = self._write_outputs()
        return report

    # -- outputs ------------------------------------------------------------------------------------
    def _write_outputs(self) -> dict[str, str]:
        c, k = self.config, self.config.decodes_per_path
        store = TrajectoryStore(pad_token=self.vocab.pad_id)
        episodes: list[Episode] = []
        instr_ids: list[str] = []
        scans, max_degree = None, None
        for chunk in range(self.chunks):
            saved = load_file(self._chunk_file(chunk))
            if scans is None:
                scans, max_degree = saved["scans"], saved["max_degree"]
            first, tokens = int(saved["first_path"]), saved["tokens"].to(torch.int64)
            planned = self.plan[first : first + c.chunk_size]
            texts = [self.vocab.decode(row) for row in tokens.tolist()]
            for i, p in enumerate(planned):
                episode = p.to_episode(
                    self.dataset.graph(p.scan), c.path_id_offset + first + i, texts[i * k : (i + 1) * k]
                )
                episodes.append(episode)
                instr_ids.extend(episode.instr_id(j) for j in range(k))
            rows = torch.arange(len(planned)).repeat_interleave(k)
            lengths = (tokens != self.vocab.pad_id).sum(1)
            instruction = torch.cat([torch.full((len(tokens), 1), self.vocab.bos_id), tokens], dim=1)
            store.extend_padded(
                instruction,
                lengths + 1,
                saved["viewpoints"][rows],
                saved["actions"][rows],
                saved["lengths"][rows],
                {"headings": saved["headings"][rows]},
            )
        out = split_file(self.root, c.split_name)
        tmp = out.with_name(out.name + ".tmp")
        write_r2r(tmp, episodes)
        os.replace(tmp, out)
        store_path, meta_path = store_files(self.root, c.split_name)
        store.save(store_path)
        meta = {
            "split": c.split_name,
            "scans": scans,
            "max_degree": max_degree,
            "stop_action": max_degree,
            "instr_ids": instr_ids,
            "options": self.options,
            "new_scans": self.new_scans,
            "paths": len(episodes),
            "instructions": len(instr_ids),
        }
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        shutil.rmtree(self.work)
        return {"r2r": str(out), "trajectories": str(store_path), "meta": str(meta_path)}


def synthesize(
    data_dir: str | Path,
    speaker: str | Path,
    config: SynthesisConfig,
    overwrite: bool = False,
    show_progress: bool = True,
    max_chunks: int | None = None,
    feature_builder: Callable[[Path, str], None] = build_world_features,
) -> SynthesisReport:
    """Run (or resume) a synthesis job; see :class:`Synthesizer`."""
    job = Synthesizer(data_dir, speaker, config, overwrite, show_progress, feature_builder)
    return job.run(max_chunks)

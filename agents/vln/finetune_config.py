"""The typed schema of ``configs/vln_finetune.yaml``: data, env, learner and DAgger settings of a
fine-tuning run (see :mod:`~lodestar.agents.vln.finetune`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lodestar.agents.vln.follower import ARCHITECTURE_FIELDS, FollowerConfig
from lodestar.runtime.protocol import check_selection_splits


@dataclass
class FinetuneDataConfig:
    features: str = "auto"  # <data>/features/<name>.hdf5 (or .tsv); "auto": the only features file there
    angle_feature_size: int = 32
    max_instruction_len: int = 80
    train_split: str = "train"
    augment_split: str | None = None  # e.g. "synthetic": EnvDrop-style augmentation
    augment_every: int = 2  # with augmentation, every n-th iteration runs on augment_split
    eval_splits: list[str] = field(default_factory=lambda: ["val_seen", "val_unseen"])
    eval_max_episodes: int = 0  # paths per evaluation split during training; 0 = all
    feature_dtype: Literal["float32", "float16"] = "float16"


@dataclass
class NavEnvConfig:
    max_steps: int = 15
    success_distance: float = 3.0
    success_bonus: float = 2.0
    failure_penalty: float = 2.0
    move_reward: Literal["distance", "sign"] = "distance"


@dataclass
class LearnerConfig:
    teacher_envs: int = 16  # rows driven by the teacher (teacher forcing)
    learner_envs: int = 16  # rows driven by the follower (student forcing, DAgger, A2C)
    rollout_steps: int = 15
    teacher_prob: float = 0.0  # DAgger beta on learner rows
    teacher_weight: float = 1.0
    student_weight: float = 1.0
    rl_weight: float = 0.5
    value_weight: float = 0.5
    entropy_weight: float = 0.01
    gamma: float = 0.9
    gae_lambda: float = 0.95
    normalize_advantages: bool = True
    # An episode cut at max_steps is scored where it ends (as the R2R metrics do): "stop" gives it the
    # STOP reward there and ends the return; "bootstrap" continues it with the critic's value, which
    # lets the policy avoid the failure penalty by never stopping.
    truncation: Literal["stop", "bootstrap"] = "stop"

    def __post_init__(self) -> None:
        if self.teacher_envs < 0 or self.learner_envs < 0 or self.teacher_envs + self.learner_envs < 1:
            raise ValueError("teacher_envs and learner_envs must be >= 0 with at least one env")
        if self.rollout_steps < 1:
            raise ValueError(f"rollout_steps must be >= 1, got {self.rollout_steps}")


@dataclass
class DaggerConfig:
    enabled: bool = True
    capacity: int = 20_000  # episodes kept (FIFO)
    batch_size: int = 8
    weight: float = 1.0
    min_episodes: int = 64  # replay starts once the store holds this many


@dataclass
class FinetuneConfig:
    """The typed schema of ``configs/vln_finetune.yaml``."""

    name: str | None = None
    data_dir: str = ""
    init: str | None = None  # pretrained follower: a pretraining run dir, checkpoint or best.pt
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 0
    runs_dir: str = "runs"
    iterations: int = 2000
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 2.0
    log_every: int = 20
    eval_every: int = 250
    eval_num_envs: int = 64
    select_split: str = "val_unseen"
    select_metric: Literal["spl", "sr", "ndtw", "sdtw", "cls"] = "spl"
    log_episodes: int = 2  # maps + GIFs per evaluation split at every validation (procedural worlds)
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    env: NavEnvConfig = field(default_factory=NavEnvConfig)
    learn: LearnerConfig = field(default_factory=LearnerConfig)
    dagger: DaggerConfig = field(default_factory=DaggerConfig)
    model: FollowerConfig = field(default_factory=FollowerConfig)

    def __post_init__(self) -> None:
        for name in ("iterations", "log_every", "eval_num_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every > 0 and self.select_split not in self.data.eval_splits:
            raise ValueError(
                f"select_split {self.select_split!r} must be one of data.eval_splits {self.data.eval_splits}"
            )
        check_selection_splits(self.select_split, self.data.eval_splits, owner="fine-tuning config")
        if self.data.augment_split is not None and self.data.augment_every < 2:
            raise ValueError("data.augment_every must be >= 2 (every n-th iteration is augmentation)")


ARCHITECTURE_KEYS = [
    "data.features",
    "data.angle_feature_size",
    "data.max_instruction_len",
    "data.augment_split",
    "learn.teacher_envs",
    "learn.learner_envs",
    *(f"model.{name}" for name in ARCHITECTURE_FIELDS),
]

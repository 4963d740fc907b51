"""What every command-line script shares: clean errors for bad input, and the training scripts' options.

Training scripts take ``--config <yaml>`` (a new run) or ``--resume <run dir>`` (continue one),
optionally ``--data <dataset dir>``, and ``key=value`` overrides; :func:`training_parser` builds that
parser and :func:`resolve_run` turns its arguments into a config and a run directory.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from lodestar.runtime.checkpoint import CheckpointError, CheckpointManager
from lodestar.runtime.config import ConfigError, describe_config, load_config
from lodestar.runtime.run_lock import RunLockedError
from lodestar.runtime.training import TrainingDiverged

# Errors that mean "the user's input is wrong": printed as one clear line, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CheckpointError,
    RunLockedError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    ValueError,
)
# A run whose loss became NaN/inf: its last good checkpoint is kept, the exit code tells it apart.
DIVERGED_EXIT_CODE = 3


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Call ``main`` and exit with its code; user errors exit 2 with ``error: <message>``, a diverged
    training run exits 3 the same way."""
    try:
        code = main(None)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        code = 2
    except (TrainingDiverged, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = DIVERGED_EXIT_CODE
    sys.exit(code)


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts that must be at least 1 (``--episodes``, ``--num-envs``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# -- training scripts ----------------------------------------------------------------------------------


class NamedRunConfig(Protocol):
    """The config fields that place a run: ``<runs_dir>/<name>``, named after the seed by default."""

    name: str | None
    seed: int
    runs_dir: str


C = TypeVar("C", bound=NamedRunConfig)


@dataclass
class TrainingRun(Generic[C]):
    """A training script's run: its config, its directory and whether it continues from a checkpoint."""

    config: C
    run_dir: Path
    resume: bool
    checkpoint: Path | None = None  # with ``resume``: this checkpoint instead of the newest that loads


def config_epilog(schema: type, example_config: str) -> str:
    """The ``--help`` text that lists every config key of ``schema`` with its type and default."""
    return (
        f"config keys (set them in the YAML file or as key=value overrides; defaults are the schema's,\n"
        f"a file such as {example_config} may set others):\n{describe_config(schema)}"
    )


def training_parser(
    description: str, example_config: str, schema: type, data: bool = True
) -> argparse.ArgumentParser:
    """``--config | --resume`` (exactly one), ``--data`` (when ``data``) and ``key=value`` overrides.

    ``--help`` lists the keys of ``schema``, the script's config dataclass.
    """
    parser = argparse.ArgumentParser(
        description=description,
        epilog=config_epilog(schema, example_config),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help=f"YAML config (e.g. {example_config})")
    source.add_argument(
        "--resume", type=Path, help="run directory to continue from its newest checkpoint that loads"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="with --resume: continue from this checkpoint file of the run instead"
    )
    if data:
        parser.add_argument("--data", type=Path, help="navigation dataset directory (sets data_dir)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (dotted keys)")
    return parser


def resolve_run(
    schema: type[C],
    args: argparse.Namespace,
    name_prefix: str | Callable[[C], str],
    distributed: bool = False,
) -> TrainingRun[C]:
    """The config and run directory that parsed :func:`training_parser` arguments ask for.

    ``--resume <dir>``: the run's own ``config.yaml`` plus the overrides. ``--config``: that file plus
    the overrides, in ``<runs_dir>/<name>``; without a ``name`` the run is called
    ``<name_prefix>-s<seed>-<YYYYmmdd-HHMMSS>`` (``name_prefix`` may depend on the config), which
    ``distributed`` runs (``torchrun``) cannot do: their processes would not agree on the clock. A new
    run is refused where checkpoints already are, since it would mix two runs.
    """
    overrides = list(args.overrides)
    if getattr(args, "data", None) is not None:
        overrides.append(f"data_dir={args.data}")
    if args.resume is not None:
        config = load_config(schema, args.resume / "config.yaml", overrides)
        return TrainingRun(config, args.resume, True, args.checkpoint)
    if args.checkpoint is not None:
        raise ValueError("--checkpoint picks the checkpoint to resume from: use it with --resume <run dir>")
    config = load_config(schema, args.config, overrides)
    if config.name is None:
        if distributed:
            raise ValueError("under torchrun pass name=<run name> so that every process writes the same run")
        prefix = name_prefix if isinstance(name_prefix, str) else name_prefix(config)
        config.name = f"{prefix}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.runs_dir) / config.name
    # Only complete checkpoints count: a run killed inside its first checkpoint write starts anew.
    if CheckpointManager(run_dir / "checkpoints").checkpoints():
        raise ValueError(f"run directory {run_dir} already has checkpoints: use --resume {run_dir}")
    return TrainingRun(config, run_dir, False)


# -- follow-up commands that scripts print ----------------------------------------------------------------


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it (shorter to read), else absolute."""
    path = Path(path).absolute()  # not resolve(): a virtual environment's python is a symlink to keep
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def script_command(script: str | Path, *args: object) -> str:
    """A command line to paste into a shell in the working directory: this Python interpreter running
    ``script`` with ``args`` (``Path`` arguments shown by :func:`shown_path`), every word shell-quoted."""
    words = [shown_path(a) if isinstance(a, Path) else str(a) for a in args]
    return shlex.join([shown_path(sys.executable), shown_path(script), *words])


def tensorboard_command(logdir: str | Path) -> str:
    """``tensorboard --logdir <logdir>``, with the ``tensorboard`` installed beside this interpreter when there is one."""
    beside = Path(sys.executable).parent / "tensorboard"
    return shlex.join([shown_path(beside) if beside.is_file() else "tensorboard", "--logdir", str(logdir)])

"""A folder laid out like real R2R data runs every stage with no extra options.

The folder is built from the tiny world: ``connectivity/``, ``R2R_<split>.json`` and one features file
named ``resnet`` (not the generated world's ``cnn``), and nothing else: no ``vocab.txt``, no houses.
Checked here: the features file is picked without naming it, the vocabulary is built without writing
into the folder, missing optional inputs are console warnings, and the command each stage prints for
the next one runs as printed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path
from types import ModuleType

import evaluate_nav
import evaluate_vln
import finetune_vln
import pretrain_vln
import pytest
import synthesize
import train_speaker

from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.agents.vln.speaker_training import SpeakerTrainConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import write_features_hdf5
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE, Vocab, build_vocab
from lodestar.pretrain.synthesis import SynthesisConfig
from lodestar.pretrain.trainer import PretrainConfig
from lodestar.runtime.cli import resolve_run, script_command, shown_path, training_parser
from lodestar.runtime.config import load_config
from tests.follower_fixtures import FEATURE_NAME, TINY_MODEL, one_torch_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
FEATURES = "resnet"  # anything but the generated world's "cnn"
SCRIPTS: dict[str, ModuleType] = {
    "train_speaker.py": train_speaker,
    "synthesize.py": synthesize,
    "pretrain_vln.py": pretrain_vln,
    "finetune_vln.py": finetune_vln,
    "evaluate_vln.py": evaluate_vln,
}
SCHEMAS: dict[str, type] = {
    "train_speaker.py": SpeakerTrainConfig,
    "pretrain_vln.py": PretrainConfig,
    "finetune_vln.py": FinetuneConfig,
}
# Budgets only: what a printed command must carry itself (data, features, init, architecture) is left out.
SPEAKER_BUDGET = ["device=cpu", "iterations=2", "eval_every=2", "checkpoint_every=2", "log_every=1",
                  "batch_size=4", "eval_batch_size=16", "decode_max_len=20", "model.embed_dim=16",
                  "model.hidden_dim=24"]  # fmt: skip
PRETRAIN_BUDGET = ["device=cpu", "iterations=2", "batch_size=4", "eval_every=0", "log_every=1",
                   "data.eval_max_paths=4", "data.angle_feature_size=8", *TINY_MODEL]  # fmt: skip
FINETUNE_BUDGET = ["device=cpu", "iterations=2", "eval_every=2", "log_every=1", "log_episodes=0",
                   "eval_num_envs=4", "data.eval_max_episodes=3", "learn.teacher_envs=2", "learn.learner_envs=2",
                   "learn.rollout_steps=4", "dagger.min_episodes=2", "dagger.batch_size=2", "env.max_steps=5",
                   "model.dropout=0.0"]  # fmt: skip


def r2r_folder(world: Path, target: Path) -> Path:
    """``world``'s graphs and splits with one features file, in the layout of the real R2R release."""
    shutil.copytree(world / "connectivity", target / "connectivity")
    for split in world.glob("R2R_*.json"):
        shutil.copy(split, target / split.name)
    (target / "features").mkdir()
    shutil.copy(world / "features" / f"{FEATURE_NAME}.hdf5", target / "features" / f"{FEATURES}.hdf5")
    return target


@pytest.fixture
def r2r_dir(random_feature_world: Path, tmp_path: Path) -> Path:
    return r2r_folder(random_feature_world, tmp_path / "R2R")


def printed_command(stdout: str, label: str) -> list[str]:
    """The argv of the command printed after ``<label>: ``, checked to name this interpreter and a script."""
    lines = [line for line in stdout.splitlines() if line.startswith(f"{label}: ")]
    assert len(lines) == 1, f"no '{label}:' line in:\n{stdout}"
    argv = shlex.split(lines[0][len(label) + 2 :])
    assert Path(argv[0]).absolute() == Path(sys.executable).absolute()
    assert Path(argv[1]).is_file() and Path(argv[1]).absolute().parent == ROOT / "scripts"
    return argv


def run_printed(run_script, argv: list[str], *extra: str):
    """Run a printed command (plus ``extra`` budget options) the way the shell would run it."""
    done = run_script(SCRIPTS[Path(argv[1]).name].main, *argv[2:], *extra)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-3000:]}"
    return done


# -- features: data.features=auto ---------------------------------------------------------------------


def _features_dir(root: Path, *names: str) -> NavDataset:
    folder = root / "features"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return NavDataset(root)


def test_auto_features_is_the_only_features_file(tmp_path: Path) -> None:
    # Beside the file: what a feature build leaves (encoder, summary, an unfinished store, a temp file).
    extras = ["encoder.pt", "resnet_summary.json", ".resnet.hdf5.1234.tmp"]
    dataset = _features_dir(tmp_path, "resnet.hdf5", *extras)
    (tmp_path / "features" / "cnn.hdf5.scans").mkdir()
    assert dataset.feature_names() == ["resnet"]
    assert dataset.resolve_features("auto") == dataset.resolve_features(None) == "resnet"
    assert dataset.feature_path("auto") == tmp_path / "features" / "resnet.hdf5"
    assert dataset.resolve_features("other") == "other"  # a named file is checked where it is read
    assert dataset.features_overrides("resnet") == []
    tsv = _features_dir(tmp_path / "tsv", "ResNet-152-imagenet.tsv")
    assert tsv.resolve_features("auto") == "ResNet-152-imagenet"


def test_several_or_no_features_files_are_errors_saying_what_to_do(tmp_path: Path) -> None:
    several = _features_dir(tmp_path / "a", "resnet.hdf5", "clip.h5")
    with pytest.raises(
        FileNotFoundError, match=r"2 features files \(clip, resnet\): choose one with data\.features="
    ):
        several.resolve_features("auto")
    assert several.resolve_features("clip") == "clip"
    assert several.features_overrides("clip") == ["data.features=clip"]
    with pytest.raises(FileNotFoundError, match="no features file in .*features.*<name>.hdf5"):
        _features_dir(tmp_path / "b", "encoder.pt").resolve_features("auto")
    with pytest.raises(FileNotFoundError, match="no features file"):
        NavDataset(tmp_path).resolve_features("auto")  # no features/ folder at all


def test_stage_with_several_features_files_stops_naming_them(
    random_feature_world: Path, tmp_path, run_script
):
    # The shared world holds two features files ("random" and "rand"); nothing is written before the error.
    done = run_script(pretrain_vln.main, "--config", ROOT / "configs" / "vln_pretrain.yaml",
                      "--data", random_feature_world, f"runs_dir={tmp_path}", "device=cpu")  # fmt: skip
    assert done.returncode == 2
    assert "2 features files (rand, random)" in done.stderr and "data.features=<name>" in done.stderr
    assert not (tmp_path / "pretrain").exists() and not list(tmp_path.iterdir())


# -- vocabulary ---------------------------------------------------------------------------------------


def test_vocab_is_built_in_memory_with_one_console_warning(r2r_dir: Path, capsys) -> None:
    before = sorted(p.name for p in r2r_dir.iterdir())
    first, second = NavDataset(r2r_dir).vocab(), NavDataset(r2r_dir).vocab()
    err = capsys.readouterr().err
    assert first == second == build_vocab(r2r_dir, write=False)
    assert sorted(p.name for p in r2r_dir.iterdir()) == before  # nothing written into the data folder
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(r2r_dir / VOCAB_FILE) in warnings[0] and "R2R_train.json" in warnings[0]


def test_a_user_vocab_file_is_used_as_it_is(r2r_dir: Path, capsys) -> None:
    built = build_vocab(r2r_dir, write=False)
    mine = Vocab([*built.tokens[:6], "zebra", *reversed(built.tokens[6:])])  # other ids, an extra word
    mine.save(r2r_dir / VOCAB_FILE)
    assert NavDataset(r2r_dir).vocab() == mine
    assert "warning" not in capsys.readouterr().err


# -- printed follow-up commands -----------------------------------------------------------------------


def _pretrain_args(data: Path, runs: Path) -> list[object]:
    return ["--config", ROOT / "configs" / "vln_pretrain.yaml", "--data", data, f"runs_dir={runs}", "name=pt"]


def test_pretraining_warns_of_a_missing_synthetic_split_and_names_chosen_features(
    r2r_dir: Path, tmp_path, run_script
):
    # With two features files the run names its features, and so must the command it prints.
    write_features_hdf5(r2r_dir / "features" / "other.hdf5", {})
    named = f"data.features={FEATURES}"
    done = run_script(
        pretrain_vln.main, *_pretrain_args(r2r_dir, tmp_path), *PRETRAIN_BUDGET, "iterations=1", named
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert named in printed_command(done.stdout, "fine-tune from it")
    # No R2R_synthetic.json: pretraining goes on without it and says so on the console, in one line.
    warning = [line for line in done.stderr.splitlines() if "R2R_synthetic.json" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ") and str(r2r_dir) in warning[0]
    assert "without the optional source 'synthetic'" in warning[0]


def test_script_command_quotes_words_and_shortens_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    line = script_command(ROOT / "scripts" / "x.py", "--data", ROOT / "data" / "my data", "k=[a, b]")
    argv = shlex.split(line)
    assert argv[1:] == ["scripts/x.py", "--data", "data/my data", "k=[a, b]"]
    assert shown_path(tmp_path) == str(tmp_path)  # outside the working directory: absolute


def test_every_stage_runs_from_the_command_the_previous_one_printed(
    r2r_dir: Path, tmp_path, monkeypatch, run_script
):
    """speaker -> synthesis -> pretraining -> fine-tuning -> evaluation on the R2R-layout folder, each stage
    started from the printed command of the stage before it, with nothing but budgets added."""
    # From another working directory: the printed script and config paths must still be found.
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    speaker = [
        "--config",
        ROOT / "configs" / "vln_speaker.yaml",
        "--data",
        r2r_dir,
        f"runs_dir={runs}",
        "name=sp",
    ]
    done = run_script(train_speaker.main, *speaker, *SPEAKER_BUDGET)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_printed(
        run_script, printed_command(done.stdout, "synthesize with it"), "--paths", "6", "device=cpu"
    )
    assert (r2r_dir / "R2R_synthetic.json").is_file()
    done = run_printed(run_script, printed_command(done.stdout, "pretrain on it"), f"runs_dir={runs}", "name=pt",
                       *PRETRAIN_BUDGET)  # fmt: skip
    assert "R2R_synthetic.json" not in done.stderr  # the optional source is there now

    finetune = printed_command(done.stdout, "fine-tune from it")
    assert (
        Path(finetune[finetune.index("--data") + 1]).absolute() == r2r_dir
        and f"init={runs / 'pt'}" in finetune
    )
    assert not any(word.startswith("data.features=") for word in finetune)  # auto picks the same file
    # The pretrained follower's architecture, where the fine-tuning config differs from it.
    assert {"data.angle_feature_size=8", "model.hidden_dim=32", "model.text_layers=1"} <= set(finetune)
    done = run_printed(run_script, finetune, f"runs_dir={runs}", "name=ft", *FINETUNE_BUDGET)
    assert f"init: {runs / 'pt'}" in (runs / "ft" / "config.yaml").read_text()

    evaluate = printed_command(done.stdout, "evaluate it")
    assert Path(evaluate[evaluate.index("--checkpoint") + 1]).absolute() == runs / "ft"
    run_printed(run_script, evaluate, "--num-envs", "4", "--log-episodes", "0", "--log-failures", "0")
    for split in ("val_seen", "val_unseen", "test"):  # the protocol's splits, the evaluation's default
        assert (runs / "ft" / "eval" / f"submit_{split}.json").is_file()

    for run in ("sp", "pt", "ft"):  # every stage read the one features file, and says so in its config
        assert f"features: {FEATURES}" in (runs / run / "config.yaml").read_text()
    vocabs = [Vocab.load(runs / run / VOCAB_FILE) for run in ("sp", "pt", "ft")]
    assert vocabs[0] == vocabs[1] == vocabs[2] == build_vocab(r2r_dir, write=False)
    assert not (r2r_dir / VOCAB_FILE).exists()


def test_readme_real_data_commands_fit_the_scripts_options(monkeypatch, capsys) -> None:
    """The commands of the README's "Use real R2R data" section against the scripts' real options."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Use real R2R data") :]
    start = section.index("```bash")
    block = section[start : section.index("```\n", start + 3)].replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith(".venv/bin/python")]
    names = [Path(argv[1]).name for argv in commands]
    assert names[:5] == [
        "train_speaker.py",
        "synthesize.py",
        "pretrain_vln.py",
        "finetune_vln.py",
        "evaluate_vln.py",
    ]
    monkeypatch.chdir(ROOT)
    for argv in commands:
        name = Path(argv[1]).name
        schema = SCHEMAS.get(name)
        if schema is not None:  # a training script: its options and config overrides make a valid config
            config = resolve_run(schema, training_parser("", "", schema).parse_args(argv[2:]), "x").config
            assert getattr(config, "select_split", "val_seen") == "val_seen"  # the protocol on real R2R
        else:  # every option given is one the script has
            with pytest.raises(SystemExit):
                {**SCRIPTS, "evaluate_nav.py": evaluate_nav}[name].main(["--help"])
            options = set(re.findall(r"--[a-z-]+", capsys.readouterr().out))
            assert {word for word in argv if word.startswith("--")} <= options, name


def test_synthesis_points_pretraining_at_a_split_of_another_name(r2r_dir: Path, tmp_path: Path) -> None:
    config = SynthesisConfig(
        split_name="synthetic_greedy", features=FEATURES
    )  # features given: no speaker read
    argv = shlex.split(synthesize.pretrain_command(r2r_dir, tmp_path / "no-speaker", config))
    assert "data.optional_sources=[synthetic_greedy]" in argv and not any("data.features" in w for w in argv)
    pretrain = load_config(PretrainConfig, argv[argv.index("--config") + 1], argv[argv.index("--data") + 2 :])
    assert pretrain.data.optional_sources == ["synthetic_greedy"]

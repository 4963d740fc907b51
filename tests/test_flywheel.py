"""``scripts/flywheel.py``: its config and round plans, its report, and two rounds on the ``tiny`` world
that resume after being stopped between stages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import flywheel
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.pretrain.synthesis_filter import load_scores
from lodestar.runtime.config import ConfigError, load_config
from tests.follower_fixtures import FEATURE_NAME, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.speaker_fixtures import copy_world

ROOT = Path(__file__).resolve().parent.parent


def config(data: Path, run: Path, *overrides: str) -> flywheel.FlywheelConfig:
    return load_config(
        flywheel.FlywheelConfig,
        flywheel.CONFIG,
        [f"data_dir={data}", f"run_dir={run}", f"features={FEATURE_NAME}", *overrides],
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("threshold=1.5", "threshold must be in"),
        ("rounds=0", "rounds must be >= 1"),
        ("seeds=[0,0]", "seeds must be distinct"),
        ("select_split=test", "select the checkpoint on a validation split"),
        ("paths_per_round=0", "paths_per_round must be >= 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, tmp_path / "run", override)


def test_round_k_labels_fresh_paths_and_trains_on_human_plus_kept(
    random_feature_world: Path, tmp_path: Path
) -> None:
    wheel = flywheel.Flywheel(config(random_feature_world, tmp_path / "run", "paths_per_round=123"))
    zero, two = wheel.round(0), wheel.round(2)
    assert (zero.labelled, zero.kept, zero.speaker_split) == ("flywheel_r0", "flywheel_r0", "train")
    assert (two.labelled, two.kept, two.speaker_split) == (
        "flywheel_r2",
        "flywheel_r2_kept",
        "flywheel_r2_speaker",
    )
    assert two.dir == tmp_path / "run" / "round_2"
    assert two.plan.synthetic == "flywheel_r2_kept"  # what pretraining reads beside human train
    assert zero.plan.synthetic == "flywheel_r0"  # round 0: PREVALENT, unfiltered
    assert "select_split=val_unseen" in two.plan.stage("finetune")


def _scores(sr: float) -> dict[str, dict[str, float]]:
    return {split: {"sr": sr, "spl": sr, "ndtw": sr} for split in ("test", "val_seen", "val_unseen")}


def test_report_gives_mean_std_interval_and_claims_a_gain_only_outside_the_noise() -> None:
    base = flywheel.summarize_seeds([_scores(x) for x in (0.2, 0.3, 0.4)], [0, 1, 2])
    assert base["test"]["sr"] == pytest.approx(30.0) and base["test"]["sr_std"] == pytest.approx(10.0)
    assert 20.0 <= base["test"]["sr_low"] <= 30.0 <= base["test"]["sr_high"] <= 40.0
    clear = flywheel.summarize_seeds([_scores(x) for x in (0.5, 0.55, 0.6)], [0, 1, 2])
    noisy = flywheel.summarize_seeds([_scores(x) for x in (0.1, 0.35, 0.6)], [0, 1, 2])
    results = [
        {"round": k, "labelled": 10, "kept": 5, "splits": s, "speaker_bleu4": {"test": 0.1}}
        for k, s in enumerate((base, clear, noisy))
    ]
    gains = flywheel.gain_over_round0(results)
    assert gains[1].mean == pytest.approx(25.0) and gains[1].excludes_zero
    assert not gains[2].excludes_zero
    text = flywheel.table(results)
    assert (
        "round 1 - round 0, test SR: +25.0" in text
        and "includes zero: no gain claimed" in text.splitlines()[-1]
    )


def _events(run: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class Stopped(Exception):
    """Stands for the process being killed between two stages."""


@pytest.mark.slow
def test_two_rounds_on_the_tiny_world_run_end_to_end_and_resume_after_a_stop(
    random_feature_world: Path, tmp_path: Path, run_script
) -> None:
    data, run = copy_world(random_feature_world, tmp_path / "world"), tmp_path / "run"
    options = ["--data", data, "--rounds", "2", "--run", run, "--quick", "seeds=[0]", "paths_per_round=30",
               "new_houses_per_round=0", "threshold=0.1", "parallel=1", f"features={FEATURE_NAME}"]  # fmt: skip

    def stop_after_filter(round_index: int, stage: str) -> None:
        if (round_index, stage) == (1, "filter"):
            raise Stopped

    original = flywheel.Flywheel.__init__

    def with_stop(self: flywheel.Flywheel, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        self.after_stage.append(stop_after_filter)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flywheel.Flywheel, "__init__", with_stop)
        with pytest.raises(Stopped):
            flywheel.main([str(a) for a in options])
    assert (run / "round_0" / "metrics.json").is_file() and not (run / "round_1" / "metrics.json").exists()
    kept = NavDataset(data).episodes("flywheel_r1_kept")
    assert kept and not (data / "R2R_flywheel_r1_speaker.json").exists()
    finished = {
        path: path.stat().st_mtime_ns
        for path in [
            data / "R2R_flywheel_r0.json",
            data / "R2R_flywheel_r1.json",
            data / "R2R_flywheel_r1_kept.json",
            run / "round_0" / "speaker" / "best.pt",
            run / "round_0" / "follower-s0" / "best.pt",
        ]
    }
    times_before = json.loads((run / "round_1" / "stages.json").read_text())
    round0_times = (run / "round_0" / "stages.json").read_text()

    done = run_script(flywheel.main, *options)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished stages reused, not redone
    assert "labelling" not in done.stderr and "walks every instruction" not in done.stderr
    assert "round 0" not in done.stderr and (run / "round_0" / "stages.json").read_text() == round0_times
    assert "round 1: training the speaker on 'flywheel_r1_speaker'" in done.stderr
    times = json.loads((run / "round_1" / "stages.json").read_text())
    assert times["label"] == times_before["label"] and {"speaker", "follower", "evaluate"} <= set(times)

    speaker_split = NavDataset(data).episodes("flywheel_r1_speaker")
    assert len(speaker_split) == len(NavDataset(data).episodes("train")) + len(kept)
    assert set(load_scores(data, "flywheel_r1_kept")) == {str(ep.path_id) for ep in kept}
    for k in (0, 1):
        metrics = json.loads((run / f"round_{k}" / "metrics.json").read_text())
        assert set(metrics["splits"]) >= {"test", "val_seen", "val_unseen"}
        assert 0.0 <= metrics["splits"]["test"]["sr"] <= 100.0
        assert (run / f"round_{k}" / "follower-s0" / "best.pt").is_file()
    filtered = json.loads((run / "round_1" / "filter.json").read_text())
    assert filtered["pairs"] == 30 and filtered["kept"]["pairs"] == len(
        [i for ep in kept for i in ep.instructions]
    )
    assert json.loads((run / "round_1" / "metrics.json").read_text())["kept"] == filtered["kept"]["pairs"]
    events = _events(run)
    assert [step for step, _ in events["flywheel/test/sr"]] == [0, 1]
    assert [step for step, _ in events["flywheel/data/kept"]] == [0, 1]
    assert "round 1 - round 0, test SR" in done.stdout


def _smoke_args(fixture, work: Path) -> list[object]:
    data = copy_world(fixture("random_feature_world"), work / "world")
    return ["--data", data, "--rounds", "1", "--run", work / "run", "--quick", "seeds=[0]", "paths_per_round=20",
            "new_houses_per_round=0", "parallel=1", f"features={FEATURE_NAME}"]  # fmt: skip


@pytest.mark.script_run("flywheel.py", _smoke_args)
def test_flywheel_command_runs_round_zero(script_run) -> None:
    """The command as a user starts it, round 0 only (the PREVALENT recipe); the filtered rounds are
    covered by the slow two-round test above and by ``tests/test_synthesis_filter.py``."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    metrics = json.loads((script_run.work / "run" / "round_0" / "metrics.json").read_text())
    assert metrics["labelled"] == metrics["kept"] == 20
    assert set(metrics["seconds"]) == {"speaker", "label", "follower", "evaluate"}
    assert "round" in script_run.stdout.splitlines()[0] and "BLEU-4 test" in script_run.stdout


def test_a_stage_killed_part_way_keeps_its_time_and_the_resumed_stage_adds_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = tmp_path / "stages.json"
    now = [100.0]  # a clock the test drives, so a slow machine cannot change the figures
    monkeypatch.setattr(flywheel, "stage_clock", lambda: now[0])
    monkeypatch.setattr(flywheel, "STAGE_HEARTBEAT_S", 0.01)

    def running_so_far() -> float | None:
        recorded = json.loads(times.read_text()) if times.exists() else {}
        return recorded.get(flywheel.RUNNING, {}).get("speaker")

    def killed() -> tuple[None, bool]:
        now[0] += 30.0
        deadline = time.monotonic() + 10.0
        while running_so_far() != 30.0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the heartbeat has saved the time so far
        raise Stopped

    with pytest.raises(Stopped):
        flywheel.timed_stage(times, "speaker", killed)
    assert running_so_far() == 30.0
    assert flywheel.stage_seconds(times) == {}  # an unfinished stage is not reported

    def resumed() -> tuple[str, bool]:
        now[0] += 12.0
        return "done", True

    assert flywheel.timed_stage(times, "speaker", resumed) == "done"
    recorded = json.loads(times.read_text())
    assert flywheel.RUNNING not in recorded
    assert recorded["speaker"] == 42.0  # the killed stretch plus the resumed one
    flywheel.timed_stage(times, "label", lambda: (None, False))  # reused: no time recorded
    assert flywheel.stage_seconds(times) == {"speaker": 42.0}
    # Killed after its work but before its record: the resumed stage reuses the work, keeps the time.
    times.write_text(json.dumps({**recorded, flywheel.RUNNING: {"filter": 7.0}}))
    flywheel.timed_stage(times, "filter", lambda: (None, False))
    assert flywheel.stage_seconds(times)["filter"] == 7.0

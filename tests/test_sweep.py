"""`ensemble sweep`: a grid of cells x seeds, each an ordinary run directory, resumable, with the
across-seed verdict per cell computed as `--repeats` computes it. The decisions (what a run still
needs, which failures belong to a cell, how many cells fit, the ETA) are tested without Ray."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble import cli
from ensemble.analysis.repeats import repeat_configs, summarize
from ensemble.config import build_config
from ensemble.errors import MemberFailed
from ensemble.job.failures import NeedsNewRun
from ensemble.report import RunReport
from ensemble.sweeps import decisions
from ensemble.sweeps.grid import cells, parse_axis, split_values
from ensemble.sweeps.runner import plan_sweep
from tests.tiny import TINY
from workers.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
# start-up dominates a tiny run: 1 epoch, the baseline 1 epoch, a small test split
ONE_EPOCH = TINY + ["train.epochs=1", "baseline.max_epochs=1", "data.val_size=60", "data.test_size=150"]


def options(settings):
    return [a for s in settings for a in ("--set", s)]


# --- the grid (pure) ---

def test_grid_values_are_split_at_top_level_commas_and_read_as_yaml():
    assert split_values("1,5") == ["1", "5"] and split_values("[4, 8],[8, 16]") == ["[4, 8]", "[8, 16]"]
    axis = parse_axis("model.channels=[4,8],[8,16]")
    assert axis.key == "model.channels" and axis.values == [[4, 8], [8, 16]]
    assert parse_axis("eager.rule=plateau,none").values == ["plateau", "none"]


def test_cells_span_the_grid_first_axis_slowest_and_seed_like_repeats(tmp_path):
    base = build_config({}, TINY + ["seed=3"])
    found = cells(base, [parse_axis("members=1,2"), parse_axis("data.train_size=100,150")], 2, str(tmp_path))
    assert [c.settings for c in found] == [{"members": m, "data.train_size": n} for m in (1, 2) for n in (100, 150)]
    assert found[1].name == "c01_members-1_data.train_size-150"
    expected = repeat_configs(found[1].runs[0].model_copy(update={"seed": 3}), 2, found[1].name)
    assert [(c.name, c.seed) for c in found[1].runs] == [(c.name, c.seed) for c in expected]
    assert [c.seed for c in found[1].runs] == [3, 4] and found[1].runs[1].name.endswith("-r1")
    assert all(c.output == str(tmp_path) and c.members == 1 and c.data.train_size == 150 for c in found[1].runs)


@pytest.mark.parametrize("grid, named", [
    (["--grid", "memberz=1,2"], "'memberz' is not a config key (did you mean 'members'?)"),
    (["--grid", "members=0,2"], "axis 'members': the value 0 is refused"),
    (["--grid", "members="], "axis 'members' has an empty value"),
    (["--grid", "seed=1,2"], "axis 'seed' cannot be swept"),
    (["--grid", "members=2,2"], "axis 'members' lists a value twice"),
    ([], "empty grid"),
])
def test_bad_axes_exit_2_naming_the_axis_before_anything_is_written(tmp_path, capsys, grid, named):
    args = ["sweep", "--output", str(tmp_path / "out"), "--name", "s", *options(TINY), *grid]
    assert cli.main(args) == 2
    assert named in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists()


def test_a_sweep_section_is_read_by_sweep_and_refused_by_run(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("members: 2\ndata: {name: digits}\nsweep:\n  grid: {members: [1, 3]}\n  repeats: 2\n"
                      "  name: paper\n")
    assert cli.main(["sweep", "--config", str(config), "--output", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Sweep paper" in out and "2 cell(s) x 2 seed(s) = 4 run(s)" in out and "c01_members-3-r1  seed 1: new" in out
    assert "estimated time about" in out and not (tmp_path / "paper").exists()
    assert cli.main(["run", "--config", str(config), "--dry-run"]) == 2
    assert "sweep: section" in " ".join(capsys.readouterr().err.split())  # wrapped at 100 columns
    config.write_text("sweep: {grid: {members: [1]}, repeets: 2}\n")
    assert cli.main(["sweep", "--config", str(config), "--dry-run"]) == 2
    assert "repeets" in capsys.readouterr().err


# --- the decisions (pure) ---

def test_what_each_run_still_needs():
    assert decisions.run_state(True, True, None) == "done"
    assert decisions.run_state(True, True, "diverged") == "done"  # its report says it finished after all
    assert decisions.run_state(False, True, "diverged") == "failed"
    assert decisions.run_state(False, True, None) == "resume"
    assert decisions.run_state(False, False, None) == "new"


def test_failures_of_a_cell_are_recorded_and_interruptions_stop_the_sweep():
    assert decisions.cell_failure(InputError("data.train_size=5000 is more than the data")).startswith("InputError")
    assert decisions.cell_failure(NeedsNewRun("every member diverged")) is not None
    assert decisions.cell_failure(MemberFailed("member_00", 1, ValueError("nan"))) is not None
    assert decisions.cell_failure(RuntimeError("only 0 usable member(s) remain, fewer than min_members=1")) is not None
    assert decisions.cell_failure(KeyboardInterrupt()) is None
    assert decisions.cell_failure(MemberFailed("member_01", 2, OSError(28, "No space left on device"))) is None
    assert decisions.cell_failure(OSError(28, "No space left on device")) is None
    assert decisions.cell_failure(ConnectionError("lost the cluster")) is None
    assert decisions.cell_failure(RuntimeError("something else")) is None


def test_cells_side_by_side_only_as_many_as_the_free_resources_hold():
    assert decisions.cells_side_by_side(4, {"CPU": 8.0}, {"CPU": 2.0, "GPU": 0.0}) == 4
    assert decisions.cells_side_by_side(4, {"CPU": 5.0}, {"CPU": 2.0, "GPU": 0.0}) == 2
    assert decisions.cells_side_by_side(3, {"CPU": 1.0}, {"CPU": 2.0}) == 1   # at least one: Ray queues it
    assert decisions.cells_side_by_side(4, {"CPU": 64.0, "GPU": 2.0}, {"CPU": 5.0, "GPU": 1.0}) == 2
    assert decisions.cells_side_by_side(1, {"CPU": 64.0}, {"CPU": 1.0}) == 1


def test_counts_and_eta():
    state = decisions.counts([["done", "done"], ["done", "running"], ["failed", "done"], ["pending", "pending"]])
    assert (state.cells_done, state.cells_running, state.cells_left) == (2, 1, 1)
    assert (state.runs_done, state.runs_total) == (5, 8)
    guess = 2 * decisions.START_S + 200 * decisions.RATE_S
    assert decisions.estimate_seconds([100.0, 100.0], []) == pytest.approx(guess)
    measured = [(100.0, decisions.START_S + 10.0)]  # 0.1 s per image-epoch beyond start-up
    assert decisions.estimate_seconds([50.0, 50.0], measured, side_by_side=2) == pytest.approx(decisions.START_S + 10)
    line = decisions.progress_line("c00-r1", "ensemble 0.9", state, 125.0)
    assert line == "[sweep] c00-r1: ensemble 0.9 | cells 2 done, 1 running, 1 left; runs 5/8; about 2 min left"
    assert decisions.train_images("digits", 0.5) == 898 and decisions.train_images("digits", "auto") == 1078


def test_an_existing_sweep_is_continued_only_with_resume(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text("{}")
    args = ["sweep", "--output", str(tmp_path), "--name", "s", "--grid", "members=1,2", *options(TINY)]
    assert cli.main(args) == 2
    assert "ensemble sweep --resume" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(tmp_path / "s"), "--grid", "members=1"]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(tmp_path / "s"), "--dry-run"]) == 2
    assert "cannot be read as a sweep record" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(InputError, match="not a sweep directory"):
        plan_sweep(None, resume=tmp_path / "elsewhere")


def test_one_writer_per_sweep(tmp_path, capsys):
    from ensemble.runs.runlock import run_lock
    from ensemble.sweeps.files import write_record
    from ensemble.sweeps.grid import Axis
    from ensemble.sweeps.record import SweepRecord
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    base = build_config({}, TINY).model_dump(mode="json")
    write_record(SweepRecord(name="s", axes=[Axis(key="members", values=[1])], repeats=1, base_config=base, cells=[]),
                 sweep_dir)
    with run_lock(sweep_dir):  # another command writes this sweep
        assert cli.main(["sweep", "--resume", str(sweep_dir)]) == 2
    assert "being written by another command" in " ".join(capsys.readouterr().err.split())
    assert not list(sweep_dir.glob("c00*"))  # nothing started


# --- end to end (Ray) ---

def cell_runs(sweep_dir: Path, cell: dict) -> list[RunReport]:
    return [RunReport.read(sweep_dir / run["name"]) for run in cell["runs"]]


def history_epochs(run_dir: Path) -> dict[str, list[int]]:
    return {side.name: [json.loads(line)["epoch"] for line in (side / "history.jsonl").read_text().splitlines()]
            for side in sorted(run_dir.iterdir()) if (side / "history.jsonl").is_file()}


def start_sweep(args: list[str], cwd: Path) -> subprocess.Popen:
    """`ensemble sweep` as a user starts it, on a local Ray of its own (no RAY_ADDRESS)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "ensemble", "sweep", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_2x1_sweep_stopped_by_sigterm_resumes_to_the_verdicts_repeats_computes(ray_instance, tmp_path, capsys):
    # two axes (the cells' names and order), two seeds (the across-seed verdict): 4 runs, the fewest that show it
    grid = ["--grid", "members=1,2", "--grid", "data.train_size=100"]
    args = ["--output", str(tmp_path), "--name", "grid", "--repeats", "2", *grid, *options(ONE_EPOCH)]
    process = start_sweep(args, tmp_path)
    lines = []
    for line in process.stdout:  # stopped once the first run has finished, as a pre-empted job is
        lines.append(line)
        if line.startswith("[sweep] c00_") and "-r0: ensemble" in line:
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=300) == 143, "".join(lines)
    sweep_dir = tmp_path / "grid"
    assert "ensemble sweep --resume" in " ".join("".join(lines).split())
    stopped = json.loads((sweep_dir / "sweep.json").read_text())
    first = sweep_dir / "c00_members-1_data.train_size-100-r0"
    first_report = (first / "report.json").read_bytes()
    assert stopped["cells"][0]["runs"][0]["status"] == "done" and stopped["cells"][1]["status"] == "pending"

    assert cli.main(["sweep", "--resume", str(sweep_dir), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"{first.name}  seed 0: done" in plan and "c01_members-2_data.train_size-100-r1  seed 1: new" in plan
    assert "from the runs measured so far" in plan

    assert cli.main(["sweep", "--resume", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "c00_members-1_data.train_size-100-r0:" not in out  # finished before the stop: not trained again
    assert (first / "report.json").read_bytes() == first_report
    done = json.loads((sweep_dir / "sweep.json").read_text())
    assert done["cells"][0]["runs"][0] == stopped["cells"][0]["runs"][0]  # its figures, as they were
    assert [c["settings"] for c in done["cells"]] == [{"members": m, "data.train_size": 100} for m in (1, 2)]
    for cell in done["cells"]:
        assert cell["status"] == "done" and [r["seed"] for r in cell["runs"]] == [0, 1]
        reports = cell_runs(sweep_dir, cell)
        assert all(len(r.members) == cell["settings"]["members"] for r in reports)
        for report in reports:  # no epoch trained twice, the interrupted run's included
            assert all(epochs == sorted(set(epochs)) for epochs in history_epochs(sweep_dir / report.name).values())
        repeats = summarize(cell["name"], reports, [0, 1])  # what `ensemble run --repeats` computes
        assert cell["summary"] == json.loads(repeats.model_dump_json())
        assert cell["summary"]["comparison"]["difference_ci95"] is not None or \
            len(set(cell["summary"]["comparison"]["accuracy_differences"])) == 1
    table = (sweep_dir / "sweep.md").read_text()
    assert table.count("| done |") == 2 and "ensemble - baseline [95% CI]" in table
    assert (sweep_dir / "sweep.png").stat().st_size > 0
    import ensemble
    loaded = ensemble.load(first)  # each cell x seed is an ordinary run directory
    assert loaded.report.name == first.name


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_sweep_goes_on_side_by_side(ray_instance, tmp_path):
    import ensemble
    base = build_config({}, ONE_EPOCH + ["members=1", f"output={tmp_path}"])
    lines = []
    done = ensemble.sweep(base, {"data.train_size": [100, 5000]}, repeats=1, name="s", parallel_cells=2,
                          on_line=lines.append)
    ok, failed = done.record.cells
    assert ok.status == "done" and ok.summary is not None
    assert failed.status == "failed" and "5,000" in failed.runs[0].reason and failed.summary is None
    assert any("2 cell(s) at a time" in line for line in lines)
    assert sum(line.startswith("[sweep] c0") for line in lines) == 2  # one line per finished run
    again = ensemble.sweep(resume=done.sweep_dir, on_line=lines.append)  # nothing left: nothing trains again
    assert again.record.cells[1].runs[0].reason == failed.runs[0].reason
    assert sum(line.startswith("[sweep] c0") for line in lines) == 2

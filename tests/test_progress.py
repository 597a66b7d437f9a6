"""What a run prints: the table, the epoch lines and heartbeat, and their decisions (no Ray)."""

import io
import re
import time

from rich.console import Console

from ensemble.console import aligned
from ensemble.observers.progress import (
    Board,
    Entry,
    LineView,
    QuietView,
    Watch,
    epoch_line,
    eta_seconds,
    expected_epochs,
    heartbeat_due,
    open_display,
    progress_table,
    status_line,
)
from workers.events import Done, EpochEnded, Lost, Restarted, Started
from workers.history import EpochRecord
from workers.outcome import Outcome
from workers.stopping import CONTINUE, Decision

T0 = 1_000.0


def roster(members=5, epochs=20):
    return [Entry(f"member_{i:02d}", "members", epochs) for i in range(members)] + \
           [Entry("baseline", "baseline", 20, cpus=2.0)]


def plateau_run(name, epochs, start, seconds=1.0):
    """The events of one member that trains `epochs` epochs and stops on the plateau rule."""
    events = [Started(name, start, {"device": "cpu", "threads": 1})]
    history = []
    for k in range(1, epochs + 1):
        record = EpochRecord(k, 40.0 / k, 38.0 / k, seconds)
        history.append(record)
        stop = k == epochs
        decision = Decision(True, f"plateau: validation loss improved 18.8% (< 20%) at epoch {k}") if stop else CONTINUE
        events.append(EpochEnded(name, start + k * seconds, record, decision))
    events.append(Done(name, start + epochs * seconds, Outcome(history, events[-1].decision.reason, False, 4.0)))
    return events


def default_like_run(members=5, member_epochs=(4, 4, 5, 5, 4), baseline_epochs=20):
    """Events shaped like the default run: members on 2 slots, then the baseline alone."""
    events, free = [], [T0, T0]
    for i in range(members):
        slot = min(range(2), key=lambda s: free[s])
        run = plateau_run(f"member_{i:02d}", member_epochs[i], free[slot])
        free[slot] = run[-1].at
        events += run
    events.sort(key=lambda e: e.at)
    return events + plateau_run("baseline", baseline_epochs, max(free), seconds=1.5)


def test_expected_epochs_follow_finished_peers_else_the_limit_is_a_bound():
    a, b = Entry("a", "members", 20, state="done", epoch=4), Entry("b", "members", 20, state="running", epoch=2)
    assert expected_epochs(b, [a, b]) == (4.0, False)
    assert expected_epochs(b, [b]) == (20.0, True)
    assert expected_epochs(Entry("c", "members", 20, state="running", epoch=6), [a]) == (7.0, False)


def test_eta_is_remaining_member_epochs_at_their_pace_over_the_members_training():
    done = Entry("a", "members", 20, state="done", epoch=4, seconds=[1.0] * 4)
    running = Entry("b", "members", 20, state="running", epoch=2, seconds=[2.0, 2.0])
    queued = Entry("c", "members", 20)
    eta, bound = eta_seconds([done, running, queued])
    assert (eta, bound) == ((2 * 2.0 + 4 * 1.5) / 1, False)  # c at the mean pace of the others
    assert eta_seconds([Entry("x", "members", 5)]) == (None, True)
    eta, bound = eta_seconds([Entry("y", "members", 5, state="running", epoch=1, seconds=[3.0])])
    assert (eta, bound) == (12.0, True)


def test_heartbeat_is_due_every_interval():
    assert not heartbeat_due(T0 + 29.9, T0, 30.0)
    assert heartbeat_due(T0 + 30.0, T0, 30.0)


def test_epoch_lines_fit_in_120_characters_and_name_the_stop_rule():
    entry = Entry("member_03", "members", 20, epoch=4, train_loss=25.1234, val_loss=24.9876, gain=0.188,
                  seconds=[1.02], note="plateau: validation loss improved 18.8% (< 20%) at epoch 4")
    line = epoch_line(entry, 12.3, stopped=True)
    assert len(line) <= 120 and line.endswith("stopped: plateau")
    assert "4/20" in line and "18.8%" in line and "24.99" in line and "12.3s" in line
    huge = Entry("baseline", "baseline", 1000, epoch=999, train_loss=1e300, val_loss=float("nan"), seconds=[1e5],
                 note="x" * 300)
    assert len(epoch_line(huge, 1e7, stopped=True)) <= 120


def test_board_follows_a_member_through_restart_loss_and_done():
    board = Board(roster(2), started=T0)
    board.apply(Started("member_00", T0, {}))
    board.apply(EpochEnded("member_00", T0 + 1, EpochRecord(1, 10.0, 8.0, 1.0), CONTINUE))
    board.apply(EpochEnded("member_00", T0 + 2, EpochRecord(2, 9.0, 6.0, 1.0), CONTINUE))
    assert board.entries["member_00"].gain == 0.25 and board.entries["member_00"].epoch == 2
    board.apply(Restarted("member_00", T0 + 3, 1, "killed"))
    board.apply(Started("member_01", T0 + 3, {}))
    board.apply(Lost("member_01", T0 + 4, "actor died 3 time(s)"))
    assert board.counts() == {"queued": 1, "running": 1, "done": 0, "lost": 1}
    board.apply(Started("member_00", T0 + 5, {}, resumed_from=2))
    assert board.entries["member_00"].epoch == 2 and board.in_use() == (1.0, 0.0)
    line = status_line(board, T0 + 31)
    assert line.startswith("  31.0s status: 1 running, 1 queued, 0 done, 1 lost; in use 1 CPU; members ETA")


def test_the_live_view_is_one_table_that_collapses_finished_and_queued_members():
    board = Board(roster(5), started=T0)
    for event in default_like_run()[:14]:  # member_00 and member_01 done, two more training
        board.apply(event)
    out = io.StringIO()
    Console(file=out, width=120, force_terminal=False).print(progress_table(board, T0 + 9.0))
    text = out.getvalue()
    assert text.count("member ") == 1 and "ETA" in text and "epoch s" in text  # one table, one header
    rows = [line for line in text.splitlines() if re.match(r"\s*member_0\d\s+running", line)]
    assert len(rows) == 2 and "/20" in rows[0]
    assert "finished (2): member_00 done@4, member_01 done@4" in text
    assert "queued (2): member_04, baseline" in text
    assert text.splitlines()[0].startswith("members: 2 running, 2 queued, 2 done, 0 lost; elapsed 9.0s; ETA")
    assert len(text.splitlines()) <= 10  # the height follows the members training, not the events
    for event in default_like_run()[14:]:
        board.apply(event)
    out = io.StringIO()
    Console(file=out, width=120).print(progress_table(board, T0 + 60.0))
    assert out.getvalue().splitlines() == [
        "baseline: 0 running, 0 queued, 6 done, 0 lost; elapsed 1m00s; ETA -",
        "finished (6): member_00 done@4, member_01 done@4, member_02 done@5, member_03 done@5, member_04 done@4, "
        "baseline done@20"]


def test_non_terminal_output_grows_with_member_epochs_plus_heartbeats():
    events = default_like_run()
    member_epochs = sum(isinstance(e, EpochEnded) for e in events)
    out = io.StringIO()
    view = LineView(Board(roster(5), started=time.time()), out, heartbeat_seconds=0.2)
    time.sleep(1.0)  # heartbeats while "an epoch runs"
    for event in events:
        view(event)
    view.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "training 5 members (1 CPU each, at most 20 epochs) then the baseline (2 CPU, at most 20 epochs)"
    assert sum("status:" in line for line in lines) >= 2
    assert len(lines) <= member_epochs + 30 and max(map(len, lines)) <= 120
    assert sum(" epoch " in line for line in lines) == member_epochs


def test_quiet_shows_only_failures_and_notices_and_auto_picks_lines_off_a_terminal():
    out = io.StringIO()
    view = open_display(Watch(view="quiet", stream=out), roster(1))
    assert isinstance(view, QuietView) and not isinstance(view, LineView)
    for event in plateau_run("member_00", 3, T0):
        view(event)
    view(Lost("member_00", T0, "actor died", log_tail=("UserWarning: disk almost full",)))
    view.notice("Ray dashboard: http://127.0.0.1:8265")
    assert out.getvalue().splitlines() == ["member_00: LOST: actor died", "  last lines of member_00's actor log:",
                                           "  | UserWarning: disk almost full", "Ray dashboard: http://127.0.0.1:8265"]
    lines = open_display(Watch(stream=io.StringIO(), heartbeat_seconds=3600), roster(1))
    assert isinstance(lines, LineView)  # a StringIO is not a terminal
    lines.close()


def test_summary_tables_align_in_the_console_and_stay_markdown():
    text = "| | a | bb |\n|---|---|---|\n| long name | 1 | 2 |\n\n" + "word " * 40
    out = aligned(text).splitlines()
    assert out[:3] == ["|           | a   | bb  |", "| --------- | --- | --- |", "| long name | 1   | 2   |"]
    assert max(map(len, out)) <= 100 and out[3] == ""


def test_the_status_says_starting_while_actors_start_and_waiting_only_when_slots_are_full():
    from ensemble.observers.progress import waiting_text
    assert waiting_text("members", {"queued": 3, "running": 0}, False) == "; starting the member actors"
    assert waiting_text("baseline", {"queued": 1, "running": 0}, False) == "; starting the baseline"
    assert waiting_text("members", {"queued": 3, "running": 2}, False) == "; 3 waiting for free CPUs"
    assert waiting_text("members", {"queued": 1, "running": 2}, True) == "; 1 waiting for free GPUs"
    assert waiting_text("members", {"queued": 0, "running": 2}, False) == ""
    board = Board(roster(2), started=T0)
    board.apply(Started("member_00", T0, {}))
    assert status_line(board, T0 + 31).endswith("; 1 waiting for free CPUs")

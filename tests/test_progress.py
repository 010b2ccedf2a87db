"""The progress line of ``search`` and ``reproduce`` (``core.progress``): time left and best so far,
checked by hand, then the lines the driver and the runner build from a real study / plan state."""
from __future__ import annotations

import random
import re
import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from core.progress import best_so_far, eta_seconds, format_duration, pareto_front, progress_line


# ------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (41.4, "41 s"), (89.4, "89 s"), (90, "2 min"), (149, "2 min"), (151, "3 min"),
    (89 * 60, "89 min"), (90 * 60, "1 h 30 min"), (2 * 3600 + 5 * 60 + 10, "2 h 05 min"), (-3, "0 s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_eta_is_the_mean_duration_times_the_runs_left_over_the_slots():
    # mean 40 s; 9 left on 1 slot: 360 s; on 3 slots: 3 waves of 40 s = 120 s.
    assert eta_seconds([30, 50, 40], remaining=9, slots=1) == pytest.approx(360)
    assert eta_seconds([30, 50, 40], remaining=9, slots=3) == pytest.approx(120)
    # Fewer left than slots: they run side by side, one mean duration.
    assert eta_seconds([30, 50, 40], remaining=2, slots=4) == pytest.approx(40)
    # 5 left on 2 slots: 40 * 5 / 2 = 100 s.
    assert eta_seconds([40], remaining=5, slots=2) == pytest.approx(100)


def test_eta_edge_cases():
    assert eta_seconds([], remaining=3, slots=1) is None  # no finished run yet
    assert eta_seconds([10], remaining=None) is None  # no budget, no deadline
    assert eta_seconds([10], remaining=0) == 0.0
    assert eta_seconds([10, float("nan"), None], remaining=2) == pytest.approx(20)  # unusable durations ignored
    # A driver's --timeout caps the estimate, and is the estimate without a trial budget.
    assert eta_seconds([100], remaining=10, slots=1, deadline_left=300) == pytest.approx(300)
    assert eta_seconds([100], remaining=2, slots=1, deadline_left=300) == pytest.approx(200)
    assert eta_seconds([], remaining=None, deadline_left=120) == pytest.approx(120)
    assert eta_seconds([10], remaining=None, deadline_left=-5) == 0.0


def test_best_so_far_follows_the_direction():
    points = [(0, [0.41]), (1, [0.455]), (2, [0.30]), (3, [0.455])]
    assert best_so_far(points, ["maximize"]) == "best 0.455 (trial 1)"  # a tie: the first to reach it
    assert best_so_far(points, ["minimize"]) == "best 0.3 (trial 2)"
    assert best_so_far([], ["maximize"]) is None
    assert best_so_far([(7, [1.23456789])], ["minimize"]) == "best 1.235 (trial 7)"
    with pytest.raises(ValueError, match="direction"):
        best_so_far(points, ["up"])


def test_pareto_front_by_hand():
    # maximize accuracy, minimize parameters.
    points = [(0, [0.50, 100]), (1, [0.60, 200]), (2, [0.40, 150]), (3, [0.60, 200]), (4, [0.70, 400]), (5, [0.55, 100])]
    # 0 is dominated by 5 (same size, more accurate); 2 by 0 and 5; 1 and 3 are equal: both kept.
    assert pareto_front(points, ["maximize", "minimize"]) == [1, 3, 4, 5]
    assert best_so_far(points, ["maximize", "minimize"]) == "4 trials on the Pareto front"
    assert best_so_far([(0, [1.0, 2.0])], ["minimize", "minimize"]) == "1 trial on the Pareto front"
    # Both minimised: (0.5, 100) dominates every point but (0.4, 150), which is better in the first.
    assert pareto_front(points, ["minimize", "minimize"]) == [0, 2]


def test_pareto_front_agrees_with_optuna():
    rng = random.Random(0)
    directions = ["maximize", "minimize", "minimize"]
    study = optuna.create_study(directions=directions)
    for _ in range(60):
        study.add_trial(optuna.trial.create_trial(
            values=[rng.choice([0.1, 0.2, 0.3, 0.4]), rng.choice([1, 2, 3]), rng.random()], state=TrialState.COMPLETE))
    ours = pareto_front([(t.number, t.values) for t in study.trials], directions)
    assert ours == sorted(t.number for t in study.best_trials) and len(ours) > 1


def test_progress_line():
    line = progress_line(3, 12, "trial 2 COMPLETE val/pckh=0.412 (41 s)", best="best 0.455 (trial 1)", eta=240)
    assert line == "[3/12] trial 2 COMPLETE val/pckh=0.412 (41 s) · best 0.455 (trial 1) · ~4 min left"
    assert progress_line(12, 12, "trial 11 PRUNED", best="best 0.5 (trial 4)", eta=0) == "[12/12] trial 11 PRUNED · best 0.5 (trial 4)"
    assert progress_line(12, 12, "x", eta=50) == "[12/12] x"  # nothing left: no time left shown
    assert progress_line(3, None, "x", eta=65) == "[3] x · ~65 s left"
    assert progress_line(1, 4, "x") == "[1/4] x"


# ------------------------------------------------------------------- the lines the commands print
def _driver(study, n_trials, slots):
    from search.driver import SearchDriver

    driver = SearchDriver.__new__(SearchDriver)  # no spec, no pool: only what the progress line reads
    driver.study, driver.n_trials, driver.slots, driver.deadline = study, n_trials, slots, None
    return driver


def _add(study, state, value=None, seconds=None, **attrs):
    if seconds is not None:
        attrs["seconds"] = seconds
    study.add_trial(optuna.trial.create_trial(state=state, value=value, user_attrs=attrs))


def test_search_driver_progress_line_from_a_study():
    study = optuna.create_study(direction="maximize")
    _add(study, TrialState.COMPLETE, 0.41, seconds=40)
    _add(study, TrialState.COMPLETE, 0.455, seconds=50)
    _add(study, TrialState.PRUNED, seconds=15)
    _add(study, TrialState.FAIL, seconds=5)  # interrupted, retried by trial 4: counts as its retry does
    _add(study, TrialState.COMPLETE, 0.40, seconds=40, retry_of=3)
    _add(study, TrialState.PRUNED, rejected="params 3.1M > max_params 2.0M")  # rejected before launch: no duration
    line = _driver(study, n_trials=12, slots=2)._progress("trial 5 rejected before launch")
    # 5 of 12 done (trial 3 superseded); mean of 40, 50, 15, 40 = 36.25 s; 7 left on 2 slots: 126.9 s.
    assert line == "[5/12] trial 5 rejected before launch · best 0.455 (trial 1) · ~2 min left"
    study.tell(study.ask(), state=TrialState.FAIL)  # a trial that failed while sampling: done, no duration
    assert _driver(study, n_trials=None, slots=2)._progress("x") == "[6] x · best 0.455 (trial 1)"

    minimize = optuna.create_study(directions=["maximize", "minimize"])
    for values, seconds in (([0.5, 100], 10), ([0.6, 200], 20), ([0.4, 150], 30)):
        minimize.add_trial(optuna.trial.create_trial(values=values, state=TrialState.COMPLETE, user_attrs={"seconds": seconds}))
    assert _driver(minimize, n_trials=4, slots=1)._progress("trial 2 COMPLETE") == \
        "[3/4] trial 2 COMPLETE · 2 trials on the Pareto front · ~20 s left"


def test_search_driver_progress_line_with_a_deadline():
    study = optuna.create_study(direction="minimize")
    _add(study, TrialState.COMPLETE, 1.5, seconds=100)
    driver = _driver(study, n_trials=None, slots=1)
    driver.deadline = time.monotonic() + 600
    assert re.fullmatch(r"\[1\] x · best 1\.5 \(trial 0\) · ~(9|10) min left", driver._progress("x"))


def test_reproduce_runner_progress_line():
    from experiments.reproduce.runner import Reproducer

    runner = Reproducer.__new__(Reproducer)  # no pool, no plan files: only what the progress line reads
    runner.plan = SimpleNamespace(runs=[object()] * 8)
    runner.pool = SimpleNamespace(slots=2)
    runner._todo, runner.trained, runner.failures, runner.durations = 6, 2, [("run", "exit status 1")], [30.0, 50.0]
    # 2 reused + 3 ended = 5 of 8; mean 40 s, 3 left on 2 slots: 60 s.
    assert runner._progress("finished x in 50s") == "[5/8] finished x in 50s · ~60 s left"
    runner.trained = 5
    assert runner._progress("finished y in 50s") == "[8/8] finished y in 50s"


# ------------------------------------------------------------- the running runs, while they train
def test_epoch_text():
    from core.progress import epoch_text

    assert epoch_text(3, 10, "Final 45.20", 125) == "epoch 3/10 · Final 45.20 · 2 min"
    assert epoch_text(0, 10, None, 4) == "epoch 0/10 · 4 s"  # nothing validated yet: no value
    assert epoch_text(2, None) == "epoch 2"


class _Terminal:
    """A stream that says it is a terminal, and keeps what was written."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


def _screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: a carriage return goes back to the start of the line,
    and what is written then covers what was there."""
    lines, line, column = [], [], 0
    for char in text:
        if char == "\n":
            lines.append("".join(line).rstrip())
            line, column = [], 0
        elif char == "\r":
            column = 0
        else:
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
    return lines + ["".join(line).rstrip()]


def test_live_status_on_a_terminal_rewrites_one_line():
    from core.progress import LiveStatus

    terminal = _Terminal()
    status = LiveStatus(terminal, prefix="x: ", width=60)
    assert status.tty  # asked of the stream
    status.update("a", 0, "a epoch 0/3")
    status.update("b", 0, "b epoch 0/3")
    assert _screen(terminal.text) == ["x: a epoch 0/3 | b epoch 0/3"]
    status.update("a", 1, "a epoch 1/3 · Final 12.50")
    assert "\n" not in terminal.text  # rewritten in place
    assert _screen(terminal.text) == ["x: a epoch 1/3 · Final 12.50 | b epoch 0/3"]
    written = len(terminal.text)
    status.update("a", 1, "a epoch 1/3 · Final 12.50")
    assert len(terminal.text) == written  # nothing changed: nothing drawn
    # A line of its own goes above the status line, which is drawn again below it.
    status.message("x: finished c")
    assert _screen(terminal.text) == ["x: finished c", "x: a epoch 1/3 · Final 12.50 | b epoch 0/3"]
    status.remove("a")  # a shorter line covers all of the longer one
    assert _screen(terminal.text) == ["x: finished c", "x: b epoch 0/3"]
    status.update("b", 2, "b " + "y" * 100)  # cut to the terminal's width: a wrapped line cannot be rewritten
    assert max(len(line) for line in terminal.text.split("\r")) <= 59
    status.close()
    assert _screen(terminal.text) == ["x: finished c", ""]


def test_live_status_in_a_log_writes_a_line_per_epoch_at_most():
    import io

    from core.progress import LiveStatus

    now = [0.0]
    log = io.StringIO()
    status = LiveStatus(log, prefix="x: ", log_interval=30.0, clock=lambda: now[0])
    assert not status.tty
    for step, seconds in ((0, 0), (0, 2), (1, 4), (1, 6), (1, 8), (2, 20), (3, 40), (3, 45)):
        now[0] = seconds
        status.update("a", step, f"short {step}", f"a epoch {step}")
    # No line before the first validation; one at epoch 1; epoch 2 comes 16 s later, inside the
    # interval, and is not written; epoch 3, 36 s after the last line, is.
    assert log.getvalue() == "x: a epoch 1\nx: a epoch 3\n"
    status.message("x: finished a")
    status.close()
    assert log.getvalue() == "x: a epoch 1\nx: a epoch 3\nx: finished a\n"
    # Every epoch once, with no interval.
    log = io.StringIO()
    status = LiveStatus(log, log_interval=0.0)
    for step in (1, 1, 1, 2, 2, 3):
        status.update("a", step, f"a {step}")
        status.update("b", 1, "b 1")
    assert log.getvalue() == "a 1\nb 1\na 2\na 3\n"


def _tiny_plan(root):
    from experiments.recipe import ConfigComposer
    from experiments.reproduce import compose_plan, load_table, plan_runs

    spec = load_table("tests/configs/table_tiny.yaml")
    runs = plan_runs(spec, "quick", [0], str(root))
    return compose_plan(spec, spec.profile("quick"), [0], runs, ConfigComposer())


def _grow(metrics, epochs):
    """A running run's metrics.csv with ``epochs`` validations (the final column of row two is
    val/pckh_limbs_stack2): a train row and a validation row per epoch, as the CSV logger writes."""
    rows = ["epoch,step,train/loss,val/pckh,val/pckh_limbs_stack2"]
    for epoch in range(epochs):
        rows += [f"{epoch},{3 + 4 * epoch},0.5,,", f"{epoch},{3 + 4 * epoch},,0.4,{0.1 * (epoch + 1):.2f}"]
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text("\n".join(rows) + "\n")


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize("tty", [True, False])
def test_runner_shows_a_running_runs_epochs_from_its_metrics_csv(tmp_path, tty):
    import io

    from core.progress import LiveStatus
    from experiments.reproduce.runner import Reproducer

    plan = _tiny_plan(tmp_path)
    run = next(r for r in plan.runs if r.key == "two")
    stream = _Terminal() if tty else io.StringIO()
    reproducer = Reproducer(plan, status=LiveStatus(stream, prefix="p: ", log_interval=0.0, width=200))
    started = time.time()
    reproducer.show(run, started)  # nothing on disk yet
    for epochs in (1, 1, 2):
        _grow(run.directory / "metrics.csv", epochs)
        reproducer.show(run, started)
    _grow(run.directory / "metrics.csv", 2)
    reproducer.show(run, started)
    text = stream.text if tty else stream.getvalue()
    if tty:
        # The status line names the row and seed, the epochs of max_epochs (2 in the profile), the
        # first column's label and its last value x 100, and the time; it never starts a new line.
        assert "\n" not in text
        assert re.fullmatch(r"p: two/seed0 epoch 2/2 · Final 20\.00 · \d+ s", _screen(text)[-1]), _screen(text)
        assert "epoch 0/2 · " in text and "epoch 1/2 · Final 10.00 · " in text
    else:
        # One line per epoch, the first column's value, nothing before the first validation.
        lines = text.splitlines()
        assert [re.sub(r" · \d+ s$", "", line) for line in lines] == [
            "p: running  tables/table_tiny/quick/two/seed0 epoch 1/2 · Final 10.00",
            "p: running  tables/table_tiny/quick/two/seed0 epoch 2/2 · Final 20.00",
        ]


@pytest.mark.usefixtures("in_repo")
def test_runner_without_a_column_metric_shows_the_monitor(tmp_path):
    import io

    from core.progress import LiveStatus
    from experiments.reproduce.runner import Reproducer

    plan = _tiny_plan(tmp_path)
    run = next(r for r in plan.runs if r.key == "one")
    plan.spec.columns = {"halfway": plan.spec.columns["halfway"]}  # row one has no halfway cell
    plan.composed[run.config_hash].setdefault("run", {})["monitor"] = "val/pckh"
    log = io.StringIO()
    reproducer = Reproducer(plan, status=LiveStatus(log, log_interval=0.0))
    _grow(run.directory / "metrics.csv", 1)
    reproducer.show(run, time.time())
    assert re.fullmatch(r"running  tables/table_tiny/quick/one/seed0 epoch 1/2 · val/pckh 0\.4000 · \d+ s\n", log.getvalue())


_FAKE_FIT = """
import sys, time, yaml
from pathlib import Path
run = yaml.safe_load(open(sys.argv[1]))["run"]
metrics = Path(run["root"]) / run["name"] / "metrics.csv"
metrics.parent.mkdir(parents=True, exist_ok=True)
with open(metrics, "w") as f:
    f.write("epoch,step,val/pckh,val/pckh_limbs_stack1,val/pckh_limbs_stack2\\n")
for epoch in range(3):
    time.sleep(0.8)
    with open(metrics, "a") as f:
        f.write(f"{epoch},{epoch},0.5,0.{epoch + 1},0.{epoch + 2}\\n")
time.sleep(3.0)  # the last epoch stays on show for 30 polls before the run ends (a loaded CI machine too)
"""


@pytest.mark.usefixtures("in_repo")
def test_reproduce_shows_progress_while_a_fake_run_trains(tmp_path, monkeypatch):
    """The runner's own thread, polling a child whose metrics.csv grows by an epoch every 0.8 s (no
    training): in a log, lines of increasing epochs, one per epoch at most, then the finished line."""
    import io
    import sys

    from core.progress import LiveStatus
    from experiments.reproduce import runner as runner_module

    plan = _tiny_plan(tmp_path)
    plan.runs = [r for r in plan.runs if r.key == "one"]
    plan.composed[plan.runs[0].config_hash]["trainer"]["max_epochs"] = 3
    # The fake reads the run's override file: the argument after the last --config.
    monkeypatch.setattr(runner_module, "experiments_command",
                        lambda *args: [sys.executable, "-c", _FAKE_FIT, args[len(args) - args[::-1].index("--config")]])
    log = io.StringIO()
    reproducer = runner_module.Reproducer(plan, status=LiveStatus(log, prefix=runner_module.PREFIX, log_interval=0.0), poll=0.1)
    assert reproducer.execute(), reproducer.failures
    lines = log.getvalue().splitlines()
    shown = [int(m.group(1)) for line in lines for m in [re.match(r"convlab reproduce: running  \S+/one/seed0 epoch (\d)/3 · Final ", line)] if m]
    assert shown == sorted(set(shown)) and shown and shown[-1] == 3, lines
    assert re.match(r"convlab reproduce: \[1/1\] finished tables/table_tiny/quick/one/seed0 in \d+s \(3 epochs validated\)$", lines[-1]), lines

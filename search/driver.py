"""The search driver: samples in its own process and runs one ``fit`` process tree per trial.

For every trial the driver

1. takes the study lock, fails orphaned trials (and enqueues them again), checks the budget, asks;
2. samples the parameters (or reads back those of an enqueued retry);
3. composes base config + fixed overrides + parameters, builds the model and counts parameters and
   FLOPs; a configuration over ``constraints`` is rejected (PRUNED, ``rejected`` attribute) at once;
4. writes ``attempts/trial-NNNN/override.yaml`` (parameters, ``run.name/group/job_type/wandb_id``
   and the trial callback in ``run.callbacks``) and launches
   ``python -m experiments fit --config <base>... --config <override>`` (under torchrun when the
   spec asks) on one of its ``core.processes.SlotPool`` slots (own process group, the slot's GPUs
   or CPU share), and waits, with a timeout;
5. alone decides the state: COMPLETE with the values of ``result.json``, PRUNED, or FAIL with the
   reason (``crash``, ``oom``, ``nonfinite``, ``timeout``, ``exception``, ``interrupted``).

A retried trial whose first attempt left ``checkpoints/last.ckpt`` resumes from it, in the same run
directory and the same W&B run.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from core.io import shown_path, write_atomic
from core.processes import SlotPool, experiments_command
from core.progress import best_so_far, eta_seconds, progress_line
from experiments.recipe import ConfigComposer, get_dotted, measure_network, override_tree
from search.space import default_params, params_to_values, suggest_params
from search.spec import Objective, SearchSpec, SpecError, build_pruner, build_sampler, grid_size
from search.storage import (
    DRIVER_ATTR,
    DriverIdentity,
    HeartbeatThread,
    StudyLock,
    absolute_url,
    budget_state,
    is_rdb,
    make_stale_callback,
    open_storage,
    retry_attrs,
    retry_chain_root,
    sweep_orphans,
)
from search.validate import module_objectives, validate_space

__all__ = ["SearchDriver", "classify_failure"]


def say(message: str) -> None:
    print(f"convlab search: {message}", flush=True)


def classify_failure(returncode: int, timed_out: bool, status_dir: Path, log_path: Path | None) -> tuple[str, str]:
    """``(reason, detail)`` of a failed trial from its exit status and the ranks' markers."""
    markers = []
    for path in sorted(status_dir.glob("fail_rank*.json")):
        try:
            markers.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    tail = ""
    if log_path and log_path.exists():
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        tail = "\n".join(lines[-15:])
    if timed_out:
        return "timeout", tail
    for kind in ("oom", "nonfinite", "exception", "interrupted"):
        hits = [m for m in markers if m.get("kind") == kind]
        if hits:
            m = hits[0]
            return kind, f"rank {m['rank']}: {m['type']}: {m['message']}"
    started = sorted(int(p.stem[4:]) for p in status_dir.glob("rank*.json"))
    failed = {int(m["rank"]) for m in markers}
    silent = [r for r in started if r not in failed]
    if markers or returncode != 0:
        who = f"rank(s) {silent} died without an exception" if silent else "the process died before training"
        signals = {s.value: s.name for s in signal.Signals}
        signal_name = f" (signal {signals[-returncode]})" if -returncode in signals else ""
        return "crash", f"{who}; exit status {returncode}{signal_name}\n{tail}"
    return "exception", f"exit status 0 but no result.json\n{tail}"


class SearchDriver:
    """One driver process of a study (several may share a study through its storage)."""

    def __init__(
        self,
        spec: SearchSpec,
        storage: str | None = None,
        n_trials: int | None = None,
        slots: int | None = None,
        timeout: float | None = None,
        report: bool = True,
        retrain_top_k: int | None = None,
        retrain_seeds: list[int] | None = None,
        retrain_trials: list[int] | None = None,
    ) -> None:
        self.spec = spec
        self.n_trials = n_trials if n_trials is not None else spec.n_trials
        self.slots = slots or spec.slots
        self.timeout = timeout if timeout is not None else spec.timeout
        self.write_report = report
        self.retrain_trials = retrain_trials if retrain_trials is not None else spec.retrain.get("trials")
        self.retrain_top_k = retrain_top_k if retrain_top_k is not None else 0 if self.retrain_trials else spec.retrain.get("top_k", 0)
        self.retrain_seeds = retrain_seeds or spec.retrain.get("seeds", [1, 2, 3])
        if len(self.retrain_seeds) < 2:
            raise SpecError("--retrain-seeds: give at least 2 seeds (a verdict needs a spread)")
        self.storage_arg = storage
        self.me = DriverIdentity()
        self.stop_event = threading.Event()
        self.interrupted = False
        self.rejections = 0
        self.launched = 0
        self.errors = 0

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        """Everything that can fail on a bad spec, before any trial."""
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        spec = self.spec
        self.composer = ConfigComposer()
        config = validate_space(spec, self.composer)
        self.base_dict = self.composer.to_dict(config)
        # Absolute from here on: the slots' threads parse configs, and jsonargparse changes the
        # process's working directory to a config's folder while it reads it, so a relative path
        # used by another thread at that moment (the journal's lock, a trial's folder, a child's
        # start directory) would point into experiments/configs/.
        self.cwd = Path.cwd()
        self.runs_root = (self.cwd / (get_dotted(self.base_dict, "run.root") or "runs")).resolve()
        self.study_dir = self.runs_root / spec.study
        if not spec.objectives:  # the spec names none: optimise what the module monitors
            try:
                spec.objectives = [Objective(**o) for o in module_objectives(self.composer, config)]
            except ValueError as error:
                raise SpecError(f"objectives: {error}") from None
        _check_resource(spec, get_dotted(self.base_dict, "trainer.max_epochs"))
        shape = spec.measure.get("input_shape")
        self.input_shape = tuple(int(s) for s in shape) if shape else None
        if spec.sampler["name"] == "grid":
            size = grid_size(spec.entries) + (1 if spec.default_trial else 0)  # the default visits no grid point
            self.n_trials = min(self.n_trials or size, size)
        self.url = absolute_url(self.storage_arg or spec.storage.get("url") or str(self.study_dir / "journal.log"), self.cwd)
        self.heartbeat_interval = int(spec.storage.get("heartbeat_interval", 20))
        self.grace_period = float(spec.storage.get("grace_period", max(60, 4 * self.heartbeat_interval)))
        self.max_retry = int(spec.storage.get("max_retry", 3))
        try:
            self.pool = SlotPool(self.slots, gpus=spec.devices, processes_per_slot=spec.torchrun or 1)
        except ValueError as error:
            raise SpecError(f"slots: {error}") from None

    def connect(self) -> None:
        """Open the storage (creating the journal file or the RDB tables) and the study lock."""
        self.study_dir.mkdir(parents=True, exist_ok=True)
        self.lock = StudyLock(self.url, self.spec.study)
        with self.lock.hold():  # two drivers creating the RDB tables at once would race
            if is_rdb(self.url):
                self.storage = open_storage(
                    self.url, heartbeat_interval=self.heartbeat_interval, grace_period=max(1, int(self.grace_period)),
                    stale_callback=make_stale_callback(self.max_retry),
                )
            else:
                self.storage = open_storage(self.url)

    def open_study(self) -> Any:
        import optuna

        spec = self.spec
        self.connect()
        with self.lock.hold():
            study = optuna.create_study(
                study_name=spec.study, storage=self.storage, directions=spec.directions,
                pruner=build_pruner(spec.pruner), load_if_exists=True,
            )
            if [d.name.lower() for d in study.directions] != spec.directions:
                raise SpecError(f"objectives: study {spec.study!r} exists with directions {[d.name.lower() for d in study.directions]}")
            attrs = study.user_attrs
            if "search:uuid" not in attrs:
                import uuid

                study.set_user_attr("search:uuid", uuid.uuid4().hex)
                study.set_user_attr("search:spec", json.loads(json.dumps(spec.raw, default=str)))
                study.set_user_attr("search:objectives", [o.__dict__ for o in spec.objectives])
                study.set_metric_names([o.metric for o in spec.objectives])
            elif attrs.get("search:spec", {}).get("space") != json.loads(json.dumps(spec.raw.get("space"), default=str)):
                say(f"warning: the search space differs from the one study {spec.study!r} started with")
            if spec.default_trial and "search:default" not in study.user_attrs:  # once per study, under the lock
                self._enqueue_default(study)
            ordinal = int(attrs.get("search:drivers", 0))
            study.set_user_attr("search:drivers", ordinal + 1)
        self.uuid = study.user_attrs["search:uuid"]
        study.sampler = build_sampler(spec.sampler, spec.entries, seed_offset=ordinal)
        self.study = study
        write_atomic(self.study_dir / "spec.yaml", yaml.safe_dump(spec.raw, sort_keys=False))
        return study

    def _enqueue_default(self, study: Any) -> None:
        """Trial 0: the base config's own values of the searched parameters (``default_params``:
        clipped into the space where they lie outside it, each such case noted in the study's
        ``search:default`` attribute and the report)."""
        params, notes = default_params(self.spec.entries, self.base_dict)
        study.enqueue_trial(params, user_attrs={"default": True})
        study.set_user_attr("search:default", {"params": params, "notes": notes})
        for note in notes:
            say(f"default trial: {note}")

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.prepare()
        study = self.open_study()
        budget = f"{self.n_trials} trials" if self.n_trials else "no trial count"
        if self.timeout:
            budget += f", {self.timeout:.0f} s"
        storage = self.url if is_rdb(self.url) else shown_path(self.url)
        say(f"study {self.spec.study} ({budget}, {self.pool.describe()}) in {shown_path(self.study_dir)}; storage {storage}")
        self.deadline = time.monotonic() + self.timeout if self.timeout else None
        interval = self.heartbeat_interval if is_rdb(self.url) else max(1, self.heartbeat_interval // 2)
        self.heartbeat = HeartbeatThread(self.storage, interval)
        self.heartbeat.start()
        try:
            self.pool.run(self._slot_loop)
        except KeyboardInterrupt:
            # The pool stopped the running trials; their slots failed them as interrupted.
            self.interrupted = True
            self.stop_event.set()
            say("interrupted: the running trials were stopped (they will be retried when the study resumes)")
        finally:
            self.heartbeat.stop()
        if self.interrupted:
            return 130
        if self.write_report:
            if self.finish(study) == 130:
                return 130
        return 1 if self.errors else 0

    def finish(self, study: Any, train: bool = True) -> int:
        """Retrain the chosen trials and the default over seeds (``search.retrain``; ``train`` False:
        only what ``retrain.json`` holds), then write the verdict, the winner's config, the report
        and the W&B summary. 130 when interrupted during the retraining (its finished runs are kept)."""
        from search.report import write_outputs, write_wandb_summary
        from search.retrain import candidates, judge, retrain

        retrained = None
        chosen = candidates(study, self.spec, self.retrain_top_k, self.retrain_trials)
        if chosen:
            try:
                retrained = retrain(self, study, chosen, self.retrain_seeds, self.spec.retrain.get("timeout"), train=train)
            except KeyboardInterrupt:
                self.pool.stopping.set()
            if self.pool.stopping.is_set():
                say("interrupted during the retraining: its finished runs are kept in retrain.json; the same command continues it")
                return 130
            retrained["verdict"] = judge(retrained)
            best = study.best_trial if not self.spec.multi_objective else None
            retrained["default_is_best"] = bool(best is not None and best.user_attrs.get("default"))
        outputs = write_outputs(study, self.spec, self.composer, self.study_dir, retrained=retrained, storage_url=self.url,
                                run_budget={"n_trials": self.n_trials, "timeout": self.timeout, "slots": self.slots,
                                            "max_epochs": get_dotted(self.base_dict, "trainer.max_epochs")})
        for label, path in outputs.items():
            say(f"{label:<11} {shown_path(path)}")
        write_wandb_summary(study, self.spec, self.base_dict, self.study_dir, self.uuid, retrained=retrained)
        return 0

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _slot_loop(self, slot: int) -> None:
        try:
            self._slot_trials(slot)
        except Exception:  # storage unreachable, a bug: say so, stop this slot, fail the command
            self.errors += 1
            say(f"slot {slot} stopped on an error:\n{traceback.format_exc()}")

    def _slot_trials(self, slot: int) -> None:
        while not self.stop_event.is_set() and not self.pool.stopping.is_set() and not self._out_of_time():
            with self.lock.hold():
                sweep_orphans(self.study, self.me, self.grace_period, self.max_retry)
                state = budget_state(self.study)
                if self.n_trials is not None and state["counted"] >= self.n_trials and not state["waiting"]:
                    return
                if self.n_trials is None and self.rejections > 1000:
                    say("stopping: more than 1000 configurations rejected by the constraints")
                    self.stop_event.set()
                    return
                with _quiet():
                    trial = self.study.ask()
                self.storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, {**self.me.as_attr(), "slot": slot})
                try:  # sampling under the lock too: with several slots the suggestions stay in trial order
                    params = suggest_params(trial, self.spec.entries)
                except Exception as error:
                    self._tell_fail(trial, "driver", f"sampling failed: {type(error).__name__}: {error}")
                    continue
            self.heartbeat.add(trial._trial_id)
            try:
                self._run_trial(trial, slot, params)
            except Exception as error:  # a driver-side bug must not leave the trial RUNNING
                detail = traceback.format_exc()
                self._tell_fail(trial, "driver", f"{type(error).__name__}: {error}\n{detail[-2000:]}")
            finally:
                self.heartbeat.remove(trial._trial_id)

    # ------------------------------------------------------------------ one trial
    def _run_trial(self, trial: Any, slot: int, params: dict[str, Any]) -> None:
        """Measure and check the trial's configuration, launch its ``fit`` and decide its state."""
        values = params_to_values(params, self.spec.entries)
        measured = self._measure_or_reject(trial, params, values)
        if measured is None:
            return
        attempt, run_number, ckpt = self._attempt_dir(trial)
        run_label = self._run_label(run_number, ckpt)
        override_path = self._write_override(trial, params, values, attempt, run_number, run_label)
        result = self._launch(trial, slot, params, attempt, override_path, run_label, ckpt)
        self._decide(trial, result, attempt, measured)

    def _measure_or_reject(self, trial: Any, params: dict[str, Any], values: dict[str, Any]) -> dict[str, float] | None:
        """The trial's measured ``params``/``gflops`` (recorded as its attributes), before anything
        is launched; None when the trial is already told: FAIL (its configuration does not build)
        or PRUNED with ``rejected`` (over the spec's ``constraints``)."""
        from optuna.trial import TrialState

        spec = self.spec
        measured: dict[str, float] = {}
        if spec.measure.get("enabled", True) or spec.constraints or any(o.measured for o in spec.objectives):
            try:
                measured = self._measure(self.composer.parse(spec.base, override_tree({**spec.trial_fixed, **values})))
            except Exception as error:
                self._tell_fail(trial, "invalid_config", f"{type(error).__name__}: {error}")
                return None
            for key, value in measured.items():
                trial.set_user_attr(key, value)
        violation = _violation(spec.constraints, measured)
        if violation:
            trial.set_user_attr("rejected", violation)
            self.rejections += 1
            self.study.tell(trial, state=TrialState.PRUNED)
            self._say_finished(f"trial {trial.number} rejected before launch: {violation}  {params}")
            return None
        return measured

    def _attempt_dir(self, trial: Any) -> tuple[Path, int, Path | None]:
        """A fresh ``attempts/trial-NNNN`` (an older one is kept aside), the number of the run the
        attempt trains (the root of its retry chain when it resumes), and the checkpoint it resumes
        from: a retry resumes the ``last.ckpt`` of its chain's run when there is one."""
        frozen = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        frozen[trial.number] = self.study._storage.get_trial(trial._trial_id)
        root = retry_chain_root(frozen[trial.number], frozen)
        retry_of = trial.user_attrs.get("retry_of")
        attempt = self.study_dir / "attempts" / f"trial-{trial.number:04d}"
        if attempt.exists():  # never reuse an attempt's files: keep them aside
            attempt.rename(attempt.with_name(f"{attempt.name}-{int(time.time())}"))
        attempt.mkdir(parents=True)
        if retry_of is not None:
            last = self.study_dir / f"trial-{root:04d}" / "checkpoints" / "last.ckpt"
            if last.exists():
                self._copy_intermediate(int(retry_of), trial)
                return attempt, root, last
        return attempt, trial.number, None

    def _run_label(self, run_number: int, ckpt: Path | None) -> str:
        """``trial-NNNN``: the run's directory under the study; a fresh run never writes into a
        directory that holds files (e.g. a study re-created with the same name): ``-2``, ``-3``..."""
        run_label = f"trial-{run_number:04d}"
        if ckpt is None:
            k = 2
            while _holds_files(self.study_dir / run_label):
                run_label = f"trial-{run_number:04d}-{k}"
                k += 1
        return run_label

    def _write_override(self, trial: Any, params: dict[str, Any], values: dict[str, Any], attempt: Path, run_number: int,
                        run_label: str) -> Path:
        """``<attempt>/override.yaml``: the fixed overrides and the trial's values, and the ``run``
        section (name, W&B group/job type/id, the trial callback in ``run.callbacks``)."""
        spec = self.spec
        number, retry_of = trial.number, trial.user_attrs.get("retry_of")
        callback_args = {
            "storage": self.url,
            "study_name": spec.study,
            "trial_id": trial._trial_id,
            "trial_number": number,
            "status_dir": str(attempt),
            "pruner": spec.pruner,
            "objectives": [o.__dict__ for o in spec.objectives],
            "params": params,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "latency": {k.removeprefix("latency_"): int(v) for k, v in spec.measure.items() if k.startswith("latency_")},
        }
        base_callbacks = get_dotted(self.base_dict, "run.callbacks") or []
        run_section: dict[str, Any] = {
            "name": f"{spec.study}/{run_label}",
            "group": spec.study,
            "job_type": "trial",
            "wandb_id": f"{self.uuid[:8]}-t{run_number:04d}",
            "tags": ["search", spec.study],
            "config": {**params, "trial_number": number, "study": spec.study, "retry_of": retry_of},
            "callbacks": list(base_callbacks) + [{"class_path": "search.trial.OptunaTrialCallback", "init_args": callback_args}],
        }
        if spec.wandb:
            run_section["wandb"] = spec.wandb
        override = override_tree({**spec.trial_fixed, **values})
        # The fixed overrides may set run keys (--set run.root=...): the trial's own go on top.
        override["run"] = {**override.get("run", {}), "root": str(self.runs_root), **run_section}
        override_path = attempt / "override.yaml"
        header = f"# study {spec.study}, trial {number}: base config(s) {', '.join(spec.base)} + this file\n"
        write_atomic(override_path, header + yaml.safe_dump(override, sort_keys=False))
        return override_path

    def _launch(self, trial: Any, slot: int, params: dict[str, Any], attempt: Path, override_path: Path, run_label: str,
                ckpt: Path | None) -> Any:
        """Run ``python -m experiments fit --config <base>... --config <override> [--ckpt_path]`` on
        ``slot`` and wait for it (``SlotPool.launch``'s result); the trial's attributes say where."""
        spec = self.spec
        args = ["fit"]
        for path in spec.base:
            args += ["--config", path]
        args += ["--config", str(override_path)]
        if ckpt is not None:
            args += ["--ckpt_path", str(ckpt)]
        command = experiments_command(*args, torchrun_nproc=spec.torchrun)
        devices = self.pool.slot_gpus[slot] if self.pool.slot_gpus is not None else None
        trial.set_user_attr("run_dir", str(self.study_dir / run_label))
        trial.set_user_attr("attempt_dir", str(attempt))
        trial.set_user_attr("slot", slot)
        if devices is not None:
            trial.set_user_attr("devices", devices)
        if ckpt is not None:
            trial.set_user_attr("resumed_from", str(ckpt))
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        extra_info = f", resuming {ckpt}" if ckpt else ""
        say(f"trial {trial.number} started (slot {slot}{extra_info}): {shown}")
        self.launched += 1
        result = self.pool.launch(
            slot, command, log_path=attempt / "worker.log", timeout=spec.trial_timeout,
            extra_env={"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}, cwd=self.cwd,
        )
        trial.set_user_attr("returncode", result.returncode)
        trial.set_user_attr("seconds", round(result.seconds, 2))
        return result

    def _decide(self, trial: Any, result: Any, attempt: Path, measured: dict[str, float]) -> None:
        """The driver alone decides the state: FAIL (with the reason the ranks' markers and the exit
        status give), PRUNED, or COMPLETE with ``result.json``'s values (measured ones from
        ``measured``)."""
        from optuna.trial import TrialState

        payload = None
        result_path = attempt / "result.json"
        if result.returncode == 0 and not result.timed_out and result_path.exists():
            payload = json.loads(result_path.read_text())
        if payload is None and self.pool.stopping.is_set():
            self._tell_fail(trial, "interrupted", "the driver was interrupted; the trial will be retried", retry=True)
            return
        if payload is None:
            reason, detail = classify_failure(result.returncode, result.timed_out, attempt, attempt / "worker.log")
            if reason == "timeout":
                detail = f"no result after {self.spec.trial_timeout:.0f} s; the process group was killed\n{detail}"
            self._tell_fail(trial, reason, detail)
            return
        trial.set_user_attr("world_size", payload.get("world_size"))
        trial.set_user_attr("epochs", payload.get("epochs"))
        if payload["status"] == "pruned":
            trial.set_user_attr("pruned_at", payload.get("pruned_at"))
            self.study.tell(trial, state=TrialState.PRUNED)
            self._say_finished(f"trial {trial.number} PRUNED at epoch {payload.get('pruned_at')} ({result.seconds:.0f} s)")
            return
        self._complete(trial, result, payload, measured)

    def _complete(self, trial: Any, result: Any, payload: dict[str, Any], measured: dict[str, float]) -> None:
        """Tell a trial that ran to its end COMPLETE with its objective values, or FAIL when one was
        never logged or is not finite."""
        spec = self.spec
        objective_values = []
        for objective, value in zip(spec.objectives, payload["values"]):
            if objective.metric in measured:
                value = measured[objective.metric]
            if value is None:
                logged = ", ".join(payload.get("metrics", [])) or "none"
                self._tell_fail(trial, "exception", f"{objective.metric} was never logged (logged: {logged})")
                return
            objective_values.append(float(value))
        if "latency_ms" in [o.metric for o in spec.objectives]:
            trial.set_user_attr("latency_ms", objective_values[[o.metric for o in spec.objectives].index("latency_ms")])
        if not all(math.isfinite(v) for v in objective_values):
            self._tell_fail(trial, "nonfinite", f"objective values {objective_values}")
            return
        self.study.tell(trial, objective_values if spec.multi_objective else objective_values[0])
        shown = ", ".join(f"{o.metric}={_fmt(v)}" for o, v in zip(spec.objectives, objective_values))
        self._say_finished(f"trial {trial.number} COMPLETE {shown} ({result.seconds:.0f} s)")

    def _measure(self, config: Any) -> dict[str, float]:
        """Parameters and forward GFLOPs of a trial's network (``experiments.recipe.measure_network``), on the
        module's ``example_input_array`` or the spec's ``measure.input_shape``."""
        import torch

        model, _ = self.composer.instantiate(config)
        if self.input_shape is not None:
            model.example_input_array = torch.zeros(self.input_shape)
        measured = measure_network(model)
        out = {"params": float(measured.params)}
        if measured.gflops is not None:
            out["gflops"] = measured.gflops
        return out

    def _copy_intermediate(self, previous_number: int, trial: Any) -> None:
        """A resumed trial continues the curve of the attempt it resumes (for the pruner)."""
        previous = self.study.trials[previous_number] if previous_number < len(self.study.trials) else None
        if previous is None:
            return
        for step, value in sorted(previous.intermediate_values.items()):
            try:
                self.study._storage.set_trial_intermediate_value(trial._trial_id, step, value)
            except Exception:
                pass

    def _tell_fail(self, trial: Any, reason: str, detail: str, retry: bool = False) -> None:
        from optuna.trial import TrialState

        try:
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("fail_detail", detail[-3000:])
        except Exception:
            pass
        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if retry:
            frozen = self.study._storage.get_trial(trial._trial_id)
            count = int(frozen.user_attrs.get("retry_count", 0))
            if count < self.max_retry:
                self.study.enqueue_trial(frozen.params, user_attrs=retry_attrs(frozen, reason), skip_if_exists=False)
        first_line = detail.strip().splitlines()[0] if detail.strip() else ""
        self._say_finished(f"trial {trial.number} FAIL ({reason}): {first_line[:200]}")

    def _say_finished(self, message: str) -> None:
        """The one line of a finished trial (``core.progress``): ``[done/budget] <message> · best
        <value> (trial n)`` or ``· k trials on the Pareto front`` ``· ~T left``. The study's
        trials (every driver's) count; a failed trial that was retried counts as its retry does.
        The time left is the mean duration of the finished trials times the trials left, over this
        driver's slots."""
        try:
            message = self._progress(message)
        except Exception as error:  # the line itself matters more than its decoration
            message += f" (progress unavailable: {type(error).__name__})"
        say(message)

    def _progress(self, message: str) -> str:
        from optuna.trial import TrialState

        finished_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        superseded = budget_state(self.study)["superseded"]
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.number not in superseded]
        finished = [t for t in trials if t.state in finished_states]
        done, total = len(finished), self.n_trials
        durations = [float(t.user_attrs["seconds"]) for t in finished if t.user_attrs.get("seconds") is not None]
        deadline = getattr(self, "deadline", None)
        eta = eta_seconds(durations, max(0, total - done) if total is not None else None, self.slots,
                          deadline - time.monotonic() if deadline is not None else None)
        directions = [d.name.lower() for d in self.study.directions]
        best = best_so_far([(t.number, t.values) for t in trials if t.state == TrialState.COMPLETE], directions)
        return progress_line(done, total, message, best=best, eta=eta)


def _check_resource(spec: SearchSpec, max_epochs: Any) -> None:
    """A multi-fidelity pruner's resource is epochs trained (``search.trial``): its bounds must lie
    within the epochs a trial trains."""
    pruner = spec.pruner
    if pruner["name"] not in ("successive_halving", "hyperband") or not isinstance(max_epochs, int) or max_epochs < 1:
        return
    low, high = pruner.get("min_resource", "auto"), pruner.get("max_resource", "auto")
    if isinstance(low, int) and low >= max_epochs:
        raise SpecError(f"pruner.min_resource: {low} epochs, but a trial trains {max_epochs} (trainer.max_epochs): nothing to prune")
    if isinstance(high, int) and high != max_epochs:
        raise SpecError(f"pruner.max_resource: {high} epochs, but a trial trains {max_epochs} (trainer.max_epochs); make them equal")


def _violation(constraints: dict[str, float], measured: dict[str, float]) -> str | None:
    if "max_params" in constraints and "params" in measured and measured["params"] > constraints["max_params"]:
        return f"params {measured['params'] / 1e6:.2f}M > max_params {constraints['max_params'] / 1e6:.2f}M"
    if "max_gflops" in constraints and "gflops" in measured and measured["gflops"] > constraints["max_gflops"]:
        return f"gflops {measured['gflops']:.2f} > max_gflops {constraints['max_gflops']:.2f}"
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _holds_files(directory: Path) -> bool:
    return directory.exists() and any(directory.iterdir())


class _quiet:
    """Silences Optuna's 'heartbeat is supposed to be used with Study.optimize' warning: the driver
    records the heartbeats itself."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=".*Heartbeat.*")

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


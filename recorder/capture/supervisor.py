"""`recorder run` with several connections: collector processes, kept running.

The supervisor starts ``python -m recorder collect CONFIG --role ROLE[,ROLE...]`` per
collector process and then only watches. The public roles of a config share a process (up
to ``[connection] connections_per_process``, one thread each; ``jobs.processes``); the
private role is a process of its own. Everything below happens per process, and what is
recorded about it (state files, events, metrics) per role: a crash of a process with three
roles is one ``collector_restarted`` row for each of the three, each listing its own
subscriptions.

- a collector that exits abnormally (a non-zero code, or a signal the supervisor did not
  send) is restarted after a capped exponential backoff with jitter; the delay resets once
  a collector has run for ``reset_after`` seconds. Each outage becomes one ``events`` row
  ``collector_restarted`` (written by the supervisor into the job's data directory),
  stamped with the moment the dead collector's exit was noticed, with its exit status and
  ``down_s`` up to the start of the collector that took over, so the hole in the data is
  listed as a gap like any disconnect. The row is written once the new collector is known
  to have started (past ``startup_grace``, or when it exits other than with 75), and
  retried until it is stored: a full disk delays it, it does not lose it. An outage still
  open when the job ends (stopped during a backoff) is recorded then, down until the end;
- exit code 75 (``TEMPFAIL_EXIT``: the data directory cannot be written *for now*, e.g.
  the disk is full) means "try again later": restarted with the same backoff, for as long
  as it takes, without counting as a start-up failure. Recording resumes when space returns;
- exit code 2 means "cannot work with this config" (a config mistake, refused
  credentials, an unwritable data directory: ``fail()`` in cli.py). Restarting cannot help,
  so the supervisor records ``collector_failed``. At start-up it stops the other collectors
  (they finish their files) and exits 2; later (a key revoked mid-run) the others keep
  recording and the job exits 2 when it ends. A collector that dies
  ``max_startup_failures`` times in a row without ever staying up for ``startup_grace``
  seconds is treated like the start-up case: a job that cannot start fails clearly at
  start-up instead of looping;
- SIGTERM and SIGINT are forwarded to every collector as SIGTERM; each finishes its files
  and the supervisor exits 0 when all of them exited cleanly. Collectors still alive after
  ``stop_timeout`` are killed (their journals are recovered on the next start);
- a collector whose supervisor dies (even by kill -9) gets SIGTERM from the kernel
  (``PR_SET_DEATHSIG``), so no orphan keeps recording unsupervised.

Each state change is one line on stderr and an update of
``<data>/.status/<config>-<role>.json`` (see ``StateFile``), which ``recorder status``
reads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.capture.event_writer import record_event_in_child
from recorder.core.backoff import Backoff
from recorder.core.config import Config
from recorder.core.logs import setup_logging

log = logging.getLogger("recorder.capture.supervisor")

STATUS_DIR = ".status"
PERMANENT_EXIT = 2  # cli.fail(): a mistake that restarting cannot fix
TEMPFAIL_EXIT = 75  # recorder.capture.runner.TEMPFAIL_EXIT: full/unwritable for now
_POLL = 0.1

CommandFn = Callable[[Config, str, "float | None"], list[str]]


def job_key(config: Config, role: str) -> str:
    """The name of a job in state files and in ``source`` (``<config>-<role>``)."""
    from sinks.layout import safe_token

    return safe_token(f"{config.name}-{role}")


def state_path(root: Path, key: str) -> Path:
    return Path(root) / STATUS_DIR / f"{key}.json"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (signal {-code})"
    return f"exit code {code}"


@dataclass
class Child:
    """One collector process: a config and its roles (one, or several public roles sharing
    the process), and the process currently recording them. ``role`` and ``key`` are the
    first role's."""

    config: Config
    role: str
    root: Path
    key: str
    backoff: Backoff
    roles: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    state: str = "starting"  # starting running backoff stopping stopped finished failed
    restarts: int = 0
    started: float = 0.0  # monotonic
    started_at: float = 0.0  # wall clock
    restart_at: float | None = None  # monotonic
    last_exit: str | None = None
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    previous_pid: int | None = None
    ever_up: bool = False
    startup_failures: int = 0
    # The outage in progress: the exit of the collector that was recording (what the
    # collector_restarted row describes), and starts refused with TEMPFAIL_EXIT since.
    outage: dict[str, Any] | None = None
    tempfails: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.roles:
            self.roles = [self.role]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def name(self) -> str:
        return f"{self.config.name}/{'+'.join(self.roles)}"

    def views(self) -> list[Any]:
        """One view per role, for what is kept per role (the metrics endpoint)."""
        if len(self.roles) == 1:
            return [self]
        return [RoleView(self, r, job_key(self.config, r), i == 0)
                for i, r in enumerate(self.roles)]


class RoleView:
    """One role of a process that records several: its own ``role`` and ``key``, the rest
    (pid, state, restarts...) the process's."""

    def __init__(self, child: Child, role: str, key: str, owns_process: bool) -> None:
        self.child = child
        self.role = role
        self.key = key
        self.owns_process = owns_process  # the process's RSS is reported once, here

    def __getattr__(self, name: str) -> Any:
        return getattr(self.child, name)


class Supervisor:
    def __init__(self, jobs: Sequence[tuple[Config, str]], data: Path | None,
                 duration: float | None, url: str | None, log_level: str = "info", *,
                 backoff_initial: float = 1.0, backoff_max: float = 60.0,
                 reset_after: float = 60.0, startup_grace: float = 5.0,
                 max_startup_failures: int = 3, stop_timeout: float = 15.0,
                 command: CommandFn | None = None, record_events: bool = True,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 metrics_token: str | None = None) -> None:
        self.data = data
        self.duration = duration
        self.url = url
        self.log_level = log_level
        self.reset_after = reset_after
        self.startup_grace = startup_grace
        self.max_startup_failures = max_startup_failures
        self.stop_timeout = stop_timeout
        self.command = command or self._collect_command
        self.record_events = record_events
        from recorder.capture.jobs import processes

        self.children = [
            Child(cfg, roles[0], Path(data or cfg.output_path), job_key(cfg, roles[0]),
                  Backoff(backoff_initial, backoff_max), roles=roles)
            for cfg, roles in processes(list(jobs))
        ]
        self.deadline: float | None = None
        self.stop_signal: int | None = None
        self.stopping = False
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self._event_threads: list[threading.Thread] = []
        self._finished = threading.Event()  # ends the retries of events not stored yet
        # --metrics-port: one endpoint for every collector (recorder/capture/metrics_server.py)
        self.metrics_options = (metrics_port, metrics_host, metrics_token)
        self.metrics: Any = None

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if self.duration:
                self.deadline = time.monotonic() + self.duration
            if self.metrics_options[0] is not None and not self._start_metrics():
                return PERMANENT_EXIT
            for child in self.children:
                self._start(child)
            while not self._done():
                self._step()
                time.sleep(_POLL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_leftovers()
            # Outages no restart ended (the job stopped during a backoff or a full disk):
            # still one row each, down until now, so the gap is listed.
            for child in self.children:
                if child.outage is not None:
                    self._record_outage(child, time.time(), ended="the job stopped first")
            self._finished.set()  # each event thread makes one last attempt
            for t in self._event_threads:
                t.join(10.0)
            if self.metrics is not None:  # served until the collectors have stopped
                self.metrics.stop()
        return self.exit_code

    def _start_metrics(self) -> bool:
        from recorder.capture.metrics_server import JobMetrics

        port, host, token = self.metrics_options
        self.metrics = JobMetrics(lambda: [v for c in self.children for v in c.views()],
                                  port=port, host=host, token=token)
        try:
            self.metrics.start()
        except OSError as e:
            log.error("cannot serve metrics on %s port %d: %s", host, port,
                      e.strerror or e)
            self.metrics.stop()
            self.metrics = None
            return False
        return True

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only set a flag: the loop forwards it within one poll interval.
        if self.stop_signal is None:
            self.stop_signal = signum

    def _done(self) -> bool:
        return all(c.proc is None and c.restart_at is None for c in self.children)

    def _step(self) -> None:
        now = time.monotonic()
        if self.stop_signal is not None and not self.stopping:
            log.info("%s received: stopping %d collector(s)",
                     signal.Signals(self.stop_signal).name, self._alive())
            self._stop_all()
        for child in self.children:
            if child.proc is not None:
                code = child.proc.poll()
                if code is None:
                    if (child.state == "starting"
                            and now - child.started >= self.startup_grace):
                        child.ever_up = True
                        child.startup_failures = 0
                        self._set_state(child, "running")
                        self._confirm_restart(child)
                    if (child.backoff.attempts and now - child.started >= self.reset_after):
                        child.backoff.reset()
                    continue
                self._exited(child, code, now)
            elif child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                if self.stopping or self._past_deadline(now):
                    self._set_state(child, "stopped")
                else:
                    self._start(child)
        if self.stopping and self.stop_deadline is not None and now > self.stop_deadline:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is None:
                    log.error("%s (pid %d) did not stop within %.0f s: killing it; its "
                              "journal is recovered on the next start", child.name,
                              child.pid, self.stop_timeout)
                    child.proc.kill()
                    self.exit_code = self.exit_code or 1
            self.stop_deadline = None

    def _alive(self) -> int:
        return sum(1 for c in self.children if c.proc is not None and c.proc.poll() is None)

    def _past_deadline(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline - 0.1

    # -- starting and stopping -----------------------------------------------------------

    def _collect_command(self, cfg: Config, role: str, duration: float | None) -> list[str]:
        cmd = [sys.executable, "-m", "recorder", "collect", str(cfg.path), "--role", role,
               "--log-level", self.log_level]
        if self.data:
            cmd += ["--data", str(self.data)]
        if duration:
            cmd += ["--duration", f"{duration:.3f}"]
        if self.url and role != "private":
            cmd += ["--url", self.url]
        return cmd

    def _start(self, child: Child) -> None:
        remaining = None
        if self.deadline is not None:
            remaining = max(0.1, self.deadline - time.monotonic())
        cmd = self.command(child.config, ",".join(child.roles), remaining)
        try:
            child.proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, env=(
                self.metrics.env() if self.metrics is not None else None))
        except OSError as e:
            log.error("%s: cannot start a collector: %s", child.name, e)
            child.proc = None
            self._failed(child, f"cannot start: {e}")
            return
        child.started = time.monotonic()
        child.started_at = time.time()
        self._set_state(child, "starting")
        if child.restarts:
            log.warning("%s: restarted, pid %d (restart %d; previous pid %s %s)", child.name,
                        child.pid, child.restarts, child.previous_pid, child.last_exit)
        else:
            log.info("%s: started, pid %d", child.name, child.pid)

    def _confirm_restart(self, child: Child) -> None:
        """The collector that took over has started: the outage is over, record it. (Only
        a started collector calls this, so an outage here was followed by a start.)"""
        if child.outage is not None:
            self._record_outage(child, child.started_at)

    def _record_outage(self, child: Child, until: float, **extra: Any) -> None:
        """One collector_restarted row for the outage of ``child``, down until ``until``."""
        outage = child.outage
        assert outage is not None
        child.outage = None
        for role in child.roles:  # one row per role: each lists its own subscriptions
            detail = {
                "collector": job_key(child.config, role), "config": str(child.config.path),
                "role": role, "previous_pid": outage["pid"], "exit": outage["exit"],
                "exit_code": outage["exit_code"],
                # Confirmed at its own exit, the new collector is previous_pid already.
                "pid": child.pid if child.proc is not None else child.previous_pid,
                "restarts": child.restarts,
                "down_s": round(max(0.0, until - outage["at"]), 3),
                **_subscriptions(child.config, role), **extra,
            }
            if len(child.roles) > 1:
                detail["process_roles"] = list(child.roles)
            if child.tempfails:
                detail["failed_starts"] = child.tempfails
                detail["failed_start_reason"] = ("data directory not writable for now (exit "
                                                 f"code {TEMPFAIL_EXIT}: disk full or I/O "
                                                 "error)")
            self._record_event(child, "collector_restarted", detail, ts=outage["at"])
        child.tempfails = 0

    def _exited(self, child: Child, code: int, now: float) -> None:
        uptime = now - child.started
        child.previous_pid = child.pid
        child.proc = None
        child.last_exit_code = code
        child.last_exit = describe_exit(code)
        child.last_exit_at = time.time()
        if code != TEMPFAIL_EXIT:
            self._confirm_restart(child)  # it ran (it opened its data directory)
        ours = self.stopping and code in (0, -signal.SIGTERM, -signal.SIGINT)
        if ours or code == 0:
            log.info("%s: pid %d stopped (%s) after %.1f s", child.name, child.previous_pid,
                     child.last_exit, uptime)
            self._set_state(child, "stopped" if self.stopping else "finished")
            return
        if self.stopping:
            log.error("%s: pid %d ended with %s while stopping", child.name,
                      child.previous_pid, child.last_exit)
            self.exit_code = self.exit_code or 1
            self._set_state(child, "stopped")
            return
        if code == TEMPFAIL_EXIT:
            self._retry_later(child, now)
            return
        if child.outage is None:  # this collector was recording: an outage starts
            child.outage = {"pid": child.previous_pid, "exit": child.last_exit,
                            "exit_code": code, "at": child.last_exit_at}
        if code == PERMANENT_EXIT:
            log.error("%s: the collector cannot run (%s, see its error above); not "
                      "restarting it", child.name, child.last_exit)
            self._failed(child, "cannot run: exit code 2 (config, credentials or data "
                         "directory; see the error above)",
                         mid_run=child.ever_up or uptime >= self.startup_grace)
            return
        if not child.ever_up and uptime < self.startup_grace:
            child.startup_failures += 1
            if child.startup_failures >= self.max_startup_failures:
                log.error("%s: the collector failed %d times within %.0f s of starting (%s); "
                          "giving up", child.name, child.startup_failures,
                          self.startup_grace, child.last_exit)
                self._failed(child, f"cannot start: failed {child.startup_failures} times in "
                             f"a row ({child.last_exit})")
                return
        if uptime >= self.reset_after:
            child.backoff.reset()
        delay = child.backoff.next_delay()
        if self._past_deadline(now + delay):
            log.warning("%s: pid %d ended with %s after %.1f s; not restarting (the "
                        "duration is over)", child.name, child.previous_pid, child.last_exit,
                        uptime)
            self._set_state(child, "stopped")
            return
        child.restarts += 1
        child.restart_at = now + delay
        log.warning("%s: pid %d ended with %s after %.1f s; restarting in %.1f s",
                    child.name, child.previous_pid, child.last_exit, uptime, delay)
        self._set_state(child, "backoff", restart_in_s=round(delay, 3))

    def _retry_later(self, child: Child, now: float) -> None:
        """The collector could not open its data directory for now (a full disk): retry
        with backoff for as long as it takes; this is not a start-up failure."""
        child.tempfails += 1
        delay = child.backoff.next_delay()
        if self._past_deadline(now + delay):
            log.error("%s: the data directory still cannot be written (disk full?); the "
                      "duration is over", child.name)
            self._set_state(child, "stopped")
            return
        child.restarts += 1
        child.restart_at = now + delay
        log.error("%s: pid %d cannot write its data directory for now (exit code %d: disk "
                  "full or I/O error, see its error above); retrying in %.1f s (attempt %d)",
                  child.name, child.previous_pid, TEMPFAIL_EXIT, delay, child.tempfails)
        self._set_state(child, "backoff", restart_in_s=round(delay, 3),
                        reason="the data directory cannot be written for now (disk full?)")

    def _failed(self, child: Child, reason: str, mid_run: bool = False) -> None:
        """A collector that cannot run. At start-up the job cannot run as configured and
        stops. Mid-run (a key revoked after weeks of recording) only that collector stops:
        the others keep recording what they still can, and the job ends with exit 2."""
        child.restart_at = None
        child.outage = None  # not restarted: its collector_failed row records the end
        self._set_state(child, "failed", reason=reason)
        for role in child.roles:
            self._record_event(child, "collector_failed", {
                "collector": job_key(child.config, role), "config": str(child.config.path),
                "role": role, "pid": child.previous_pid, "exit": child.last_exit,
                "reason": reason,
            }, ts=child.last_exit_at)
        self.exit_code = PERMANENT_EXIT
        others = [c for c in self.children
                  if c is not child and (c.proc is not None or c.restart_at is not None)]
        if mid_run and others and not self.stopping:
            log.error("%s stays stopped; %s keep%s recording (the job will exit 2)",
                      child.name, ", ".join(c.name for c in others),
                      "s" if len(others) == 1 else "")
            return
        if not self.stopping and others:
            log.error("stopping the other collectors: the job cannot run as configured")
        self._stop_all()

    def _stop_all(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.stop_timeout
        for child in self.children:
            if child.restart_at is not None:
                child.restart_at = None
                self._set_state(child, "stopped")
            if child.proc is not None and child.proc.poll() is None:
                self._set_state(child, "stopping")
                try:
                    child.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _kill_leftovers(self) -> None:
        """Never leave a collector behind (e.g. after an exception in the loop)."""
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- state files and events ------------------------------------------------------------

    def _set_state(self, child: Child, state: str, **extra: Any) -> None:
        child.state = state
        child.extra = extra
        for role in child.roles:  # one state file per role, as `recorder status` reads them
            key = job_key(child.config, role)
            payload = {
                "collector": key, "config": str(child.config.path),
                "config_name": child.config.name, "role": role, "state": state,
                "pid": child.pid, "supervisor_pid": os.getpid(), "restarts": child.restarts,
                "started_at": child.started_at or None, "last_exit": child.last_exit,
                "last_exit_code": child.last_exit_code, "last_exit_at": child.last_exit_at,
                "updated_at": time.time(), **extra,
            }
            if len(child.roles) > 1:
                payload["process_roles"] = list(child.roles)
            try:
                write_state(child.root, key, payload)
            except OSError as e:
                log.debug("cannot write the state file of %s: %s", key, e)

    def _record_event(self, child: Child, kind: str, detail: dict,
                      ts: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.aggregator.supervisor_event(detail.get("collector", child.key), kind,
                                                     detail, ts)
        if not self.record_events:
            return
        self._event_threads = [t for t in self._event_threads if t.is_alive()]
        t = threading.Thread(target=self._record_until_stored, name=f"event-{kind}",
                             daemon=True, args=(child.root, kind, detail, ts,
                                                child.config.exchange))
        t.start()
        self._event_threads.append(t)

    def _record_until_stored(self, root: Path, kind: str, detail: dict,
                             ts: float | None, exchange: str) -> None:
        """A gap that is not in ``events`` is a silent loss: retry (a full disk) until
        stored, and once more when the supervisor ends."""
        delay = 1.0
        while not record_event_in_child(root, kind, detail, ts, exchange=exchange):
            if self._finished.is_set():
                log.error("the %s event for %s was not stored: %s", kind, root,
                          json.dumps(detail))
                return
            self._finished.wait(delay)
            delay = min(delay * 2, 30.0)
        if self.metrics is not None:
            self.metrics.aggregator.row_stored(detail.get("collector", "supervisor"), "events")


def _subscriptions(config: Config, role: str) -> dict[str, list[str]]:
    """What the gap covers. The row's symbol and channel stay NULL (like ``disconnected``:
    the whole connection), the detail lists them."""
    from recorder.capture import jobs

    subs = jobs.subscriptions(config, role)
    return {"channels": sorted({s.channel for s in subs}),
            "symbols": sorted({sym for s in subs for sym in s.symbols})}


def write_state(root: Path, key: str, payload: dict) -> None:
    """Replace the state file atomically (readers never see half a file)."""
    path = state_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)


def read_states(root: Path) -> list[dict]:
    out = []
    folder = Path(root) / STATUS_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        # ``.<name>.tmp`` are being written; ``*.collector.json`` are reserved for the
        # collector's own heartbeat (stats) files.
        if path.name.startswith(".") or path.name.endswith(".collector.json"):
            continue
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this collector when the supervisor dies, whatever kills it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the collector just outlives its parent
        pass


def run_many(jobs: list[tuple[Config, str]], data: Path | None, duration: float | None,
             url: str | None, log_level: str, **options: Any) -> int:
    """Run the jobs' collector processes until stopped; return the exit code for `run`."""
    return Supervisor(jobs, data, duration, url, log_level, **options).run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recorder.capture.supervisor CONFIG... [--data DIR] [--duration S] [--url URL]``:
    what ``recorder run`` does, always supervised (also for a single connection), with the
    restart policy adjustable (tests, benchmarks)."""
    import argparse

    from recorder.capture import jobs as job_plan
    from recorder.core.config import ConfigError, load_config

    p = argparse.ArgumentParser(prog="python -m recorder.capture.supervisor")
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--duration", type=float)
    p.add_argument("--url")
    p.add_argument("--log-level", default="info")
    p.add_argument("--backoff-initial", type=float, default=1.0)
    p.add_argument("--backoff-max", type=float, default=60.0)
    p.add_argument("--startup-grace", type=float, default=5.0)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--metrics-token", default=os.environ.get("RECORDER_METRICS_TOKEN"),
                   help="(default: $RECORDER_METRICS_TOKEN)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    loaded: list[Config] = []
    for path in args.configs:
        try:
            loaded.append(load_config(path))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return PERMANENT_EXIT
    jobs = job_plan.jobs(loaded)
    return run_many(jobs, args.data, args.duration, args.url, args.log_level,
                    backoff_initial=args.backoff_initial, backoff_max=args.backoff_max,
                    startup_grace=args.startup_grace, metrics_port=args.metrics_port,
                    metrics_host=args.metrics_host, metrics_token=args.metrics_token)


if __name__ == "__main__":
    sys.exit(main())

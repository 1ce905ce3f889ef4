"""A pytest plugin: the sentinel credentials must appear nowhere in the whole test session.

Checked, for every session (tests/conftest.py registers it):

- every test's captured stdout, stderr and log, and its failure text (a finding is redacted
  from the report before pytest prints it, and fails the session);
- test ids (a parametrized secret would be printed by ``-v`` and stored in .pytest_cache);
- the command line and name of every child process: at spawn for the test process's own
  children (an audit hook), and by polling for all descendants (the recorder's collectors,
  the simulator);
- at the end, every file under the session's temp folder (Parquet values and metadata,
  journal segments, logs, state files) and under the nonce state folder, which is moved to a
  private folder of the session (``XDG_RUNTIME_DIR``) so earlier runs cannot hide anything.

A finding sets the exit status to 1 and is listed, by place and needle name, in a
"sentinel secret" section of the summary; a clean run says how much was checked.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.sentinel import Scanner, intended_holders

_POLL_SECONDS = 0.25
_AUDITED = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
                      "os.system"})
_ACTIVE: list[SentinelPlugin] = []  # the plugin the (irremovable) audit hook reports to
_HOOKED = False


def _audit(event: str, args: tuple) -> None:
    if event in _AUDITED and _ACTIVE:
        _ACTIVE[-1].check_spawn(event, args)


class SentinelPlugin:
    def __init__(self) -> None:
        self.scanner = Scanner()
        self.findings: list[str] = []
        self.reports = 0
        self.spawns = 0
        self.processes: set[tuple[int, float]] = set()
        self.files = 0
        self.runtime_dir: Path | None = None
        self.current = "collection"  # the test running now, for findings
        self._old_runtime: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _found(self, where: str) -> None:
        with self._lock:
            if where not in self.findings:
                self.findings.append(where)

    # -- set-up -------------------------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        global _HOOKED
        # Nonce state files go to XDG_RUNTIME_DIR (recorder.exchanges.kraken.rest): a folder of this
        # session, inherited by every child, scanned and removed at the end.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="mr-test-runtime-"))
        self._old_runtime = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        _ACTIVE.append(self)
        if not _HOOKED:
            sys.addaudithook(_audit)
            _HOOKED = True
        self._watcher = threading.Thread(target=self._watch, name="sentinel-watch",
                                         daemon=True)
        self._watcher.start()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stop.set()
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._old_runtime is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = self._old_runtime
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # -- processes ----------------------------------------------------------------------

    def check_spawn(self, event: str, args: tuple) -> None:
        self.spawns += 1
        # Everything but the environment, which is where the secret belongs: Popen
        # (executable, args, cwd, env), exec/posix_spawn (path, args, env), spawn (mode,
        # path, args, env), system (command,).
        keep = {"subprocess.Popen": 3, "os.exec": 2, "os.posix_spawn": 2, "os.spawn": 3}
        parts = args[:keep.get(event, len(args))]
        names = self.scanner.found(repr(parts))
        if names:
            self._found(f"command line of a process started by the test process "
                        f"({event}, during {self.current}): {', '.join(names)}")

    def _watch(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            self.poll_processes()

    def poll_processes(self) -> None:
        import psutil

        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        for p in children:
            try:
                ident = (p.pid, p.create_time())
                title = " ".join(p.cmdline()) + "\n" + p.name()
            except psutil.Error:
                continue
            self.processes.add(ident)
            names = self.scanner.found(title)
            if names:
                self._found(f"command line or title of child process {p.pid} (during "
                            f"{self.current}): {', '.join(names)}")

    # -- tests and reports --------------------------------------------------------------

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            names = self.scanner.found(item.nodeid)
            if names:
                self._found(f"the id of a test in {item.path.name}: {', '.join(names)} "
                            "(give the parameter an ids= that does not show it)")

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.current = nodeid

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        report = yield
        self.redact_report(report)
        return report

    def redact_report(self, report: Any) -> None:
        """Record and redact needles in a report's sections and failure text."""
        self.reports += 1
        nodeid = getattr(report, "nodeid", "?")
        sections = []
        for title, content in report.sections:
            names = self.scanner.found(content)
            if names:
                self._found(f"{nodeid}: {title}: {', '.join(names)}")
                content = self.scanner.redact(content)
            sections.append((title, content))
        report.sections = sections
        longrepr = report.longrepr
        if longrepr is None:
            return
        if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
            text = str(longrepr[2])
        else:
            text = str(longrepr)
        names = self.scanner.found(text)
        if names:
            self._found(f"{nodeid}: the {report.when} failure text: {', '.join(names)}")
            if isinstance(longrepr, tuple):
                report.longrepr = (*longrepr[:2], self.scanner.redact(text))
            else:
                report.longrepr = self.scanner.redact(text)

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str,
                                location: Any) -> None:
        names = self.scanner.found(str(warning_message.message))
        if names:
            self._found(f"a warning of {nodeid or when}: {', '.join(names)}")

    # -- the end ------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # tryfirst: before the temp-folder plugin may delete the folder.
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(2)
        self.poll_processes()
        factory = getattr(session.config, "_tmp_path_factory", None)
        roots = [getattr(factory, "_basetemp", None), self.runtime_dir,
                 Path(tempfile.gettempdir()) / f"market-recorder-{os.getuid()}"]
        for root in roots:
            if root is not None and Path(root).is_dir():
                found, count = self.scanner.scan_tree(Path(root), intended_holders())
                self.files += count
                for where in found:
                    self._found(where)
        if self.findings:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        checked = (f"{self.reports} test reports, {self.files} files, "
                   f"{len(self.processes)} child processes, {self.spawns} spawns")
        if not self.findings:
            tr.write_line(f"sentinel secret: not found ({checked} checked)")
            return
        tr.write_sep("=", "sentinel secret", red=True)
        tr.write_line(f"sentinel credentials FOUND in {len(self.findings)} place(s) "
                      f"(values not shown; {checked} checked):", red=True)
        for where in self.findings:
            tr.write_line(f"  {where}")
        for where in self.scanner.unreadable:
            tr.write_line(f"  (could not decode, raw bytes only: {where})")


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin (from tests/conftest.py, or ``-p tests.sentinel_plugin``)."""
    if not config.pluginmanager.has_plugin("sentinel"):
        config.pluginmanager.register(SentinelPlugin(), "sentinel")

"""The plugin's options, ini keys and the `sideeye` marker's per-test settings: `Settings`
(read once per run, kept on the config) and what applies to one test (its capture spec,
links and timeout: ini + every marker + the caller's)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_sideeye.errors import CaptureSpecError
from pytest_sideeye.plugin import leaks
from pytest_sideeye.plugin.specs import checked_links, merge_capture, parse_capture_lines
from pytest_sideeye.plugin.targets import add_container_options

DEFAULT_DIR = "sideeye-reports"
DEFAULT_BUDGET_S = 60.0


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup("sideeye", "goroutine snapshots of Go services under test")
    g.addoption("--sideeye-on-timeout", action="store_true", default=None,
                help="snapshot the test's Go services when it times out "
                     "(pytest-timeout's --timeout, or --sideeye-timeout)")
    g.addoption("--sideeye-on-failure", action="store_true", default=None,
                help="snapshot the test's Go services when its setup or call fails")
    g.addoption("--sideeye-timeout", type=float, default=None, metavar="SECONDS",
                help="fail a test that runs longer than this (setup + call), "
                     "snapshotting first with --sideeye-on-timeout; 0 disables")
    g.addoption("--sideeye-timeout-method", choices=("signal", "thread"), default=None,
                help="how --sideeye-timeout interrupts a test: SIGALRM (default) or a "
                     "timer thread (used anyway where signals are unavailable)")
    g.addoption("--sideeye-dir", default=None, metavar="DIR",
                help=f"where reports are written (default: {DEFAULT_DIR})")
    parser.addini("sideeye_timeout", "default for --sideeye-timeout (seconds)")
    parser.addini("sideeye_on_timeout", "like --sideeye-on-timeout", type="bool",
                  default=False)
    parser.addini("sideeye_on_failure", "like --sideeye-on-failure", type="bool",
                  default=False)
    parser.addini("sideeye_dir", "default for --sideeye-dir")
    parser.addini("sideeye_capture", "variables to capture, one function a line: "
                  "'pkg.Func: var, var.field'", type="linelist")
    parser.addini("sideeye_link", "user links, one a line: 'pkg.F: expr == pkg.G: expr' "
                  "links the frames whose values are equal (HTTP, TCP: built in)",
                  type="linelist")
    parser.addini("sideeye_snapshot_budget", "longest a snapshot may take, seconds "
                  f"(default {DEFAULT_BUDGET_S:g})")
    g.addoption("--sideeye-leaks", action="store_true", default=None,
                help="fail a test that leaves goroutines behind in the services it uses "
                     "(snapshots before and after the test body)")
    parser.addini("sideeye_leaks", "like --sideeye-leaks", type="bool", default=False)
    g.addoption("--sideeye-sqlite", action="store_true", default=None,
                help="also write each snapshot as SQLite tables (<stem>.db beside the JSON)")
    parser.addini("sideeye_sqlite", "like --sideeye-sqlite", type="bool", default=False)
    parser.addini("sideeye_leaks_settle", "how long leaked goroutines may take to end, "
                  f"seconds (default {leaks.DEFAULT_SETTLE_S:g})")
    parser.addini("sideeye_leaks_ignore_top_function", "goroutines with this function "
                  "anywhere on the stack are not leaks (one a line)", type="linelist")
    parser.addini("sideeye_leaks_ignore_created_by", "goroutines created by this function "
                  "are not leaks (one a line)", type="linelist")
    g.addoption("--sideeye-together", action="store_true", default=None,
                help="stop every process of a snapshot before collecting any (one instant "
                     "across services; each pause then includes the collection of those "
                     "before it): SIDEEYE_TOGETHER=1")
    parser.addini("sideeye_together", "like --sideeye-together", type="bool", default=False)
    add_container_options(g, parser)


@dataclass
class Settings:
    on_timeout: bool
    on_failure: bool
    timeout: float | None
    method: str
    base_dir: Path
    start_dir: Path
    capture: dict[str, list[str]]
    budget_s: float
    junit_attachments: bool
    html_report: Path | None
    leaks: bool = False
    sqlite: bool = False
    leaks_settle_s: float | None = None
    leaks_ignore_top_function: list[str] = field(default_factory=list)
    leaks_ignore_created_by: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    together: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        start = Path(config.invocation_params.dir)
        raw_dir = config.getoption("sideeye_dir") or config.getini("sideeye_dir") or DEFAULT_DIR
        base = Path(raw_dir)
        return cls(
            on_timeout=bool(config.getoption("sideeye_on_timeout")
                            or config.getini("sideeye_on_timeout")),
            on_failure=bool(config.getoption("sideeye_on_failure")
                            or config.getini("sideeye_on_failure")),
            timeout=_seconds(config.getoption("sideeye_timeout"),
                             config.getini("sideeye_timeout"), "sideeye_timeout"),
            method=config.getoption("sideeye_timeout_method") or "signal",
            base_dir=base if base.is_absolute() else start / base,
            start_dir=start,
            capture=parse_capture_lines(config.getini("sideeye_capture")),
            budget_s=_seconds(None, config.getini("sideeye_snapshot_budget"),
                              "sideeye_snapshot_budget") or DEFAULT_BUDGET_S,
            junit_attachments=_junit_wants_stdout(config),
            html_report=_html_report_path(config, start),
            leaks=bool(config.getoption("sideeye_leaks") or config.getini("sideeye_leaks")),
            sqlite=bool(config.getoption("sideeye_sqlite") or config.getini("sideeye_sqlite")),
            leaks_settle_s=_seconds(None, config.getini("sideeye_leaks_settle"),
                                    "sideeye_leaks_settle"),
            leaks_ignore_top_function=list(config.getini("sideeye_leaks_ignore_top_function")),
            leaks_ignore_created_by=list(config.getini("sideeye_leaks_ignore_created_by")),
            links=_ini_links(config),
            together=bool(config.getoption("sideeye_together")
                          or config.getini("sideeye_together")),
        )


def _seconds(option: float | None, ini: str, name: str) -> float | None:
    if option is not None:
        return option
    if not ini:
        return None
    try:
        return float(ini)
    except ValueError:
        raise pytest.UsageError(f"{name} = {ini!r}: want a number of seconds") from None


def _junit_wants_stdout(config: pytest.Config) -> bool:
    """ATTACHMENT lines only reach the XML when junit writes captured stdout."""
    if not getattr(config.option, "xmlpath", None):
        return False
    return config.getini("junit_logging") in ("system-out", "out-err", "all")


def _html_report_path(config: pytest.Config, start: Path) -> Path | None:
    path = getattr(config.option, "htmlpath", None)
    if not path or not config.pluginmanager.hasplugin("html"):
        return None
    p = Path(path)
    return p if p.is_absolute() else start / p


def item_capture(item: pytest.Item, settings: Settings,
                 extra: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """ini + every sideeye marker on the item (module, class, function) + the caller's."""
    spec = merge_capture({}, settings.capture)
    for marker in reversed(list(item.iter_markers("sideeye"))):
        merge_capture(spec, marker.kwargs.get("capture"))
    return merge_capture(spec, extra)


def _ini_links(config: pytest.Config) -> list[str]:
    try:
        return checked_links(config.getini("sideeye_link"), "sideeye_link")
    except CaptureSpecError as e:
        raise pytest.UsageError(str(e)) from None


def item_links(item: pytest.Item, settings: Settings, extra=None) -> list[str]:
    """ini + every sideeye marker's links= + the caller's, first-seen order."""
    out = list(settings.links)
    for marker in reversed(list(item.iter_markers("sideeye"))):
        out += [x for x in checked_links(marker.kwargs.get("links"), "sideeye marker links=")
                if x not in out]
    out += [x for x in checked_links(extra, "links=") if x not in out]
    return out


def item_timeout(item: pytest.Item, settings: Settings) -> float | None:
    """The closest sideeye marker's timeout, else the option/ini."""
    for marker in item.iter_markers("sideeye"):
        if "timeout" in marker.kwargs:
            value = marker.kwargs["timeout"]
            return None if value is None else float(value)
    return settings.timeout


_SETTINGS = pytest.StashKey[Settings]()


def configure(config: pytest.Config) -> Settings:
    """Read the settings once for the run and keep them on the config (settings_of)."""
    settings = config.stash[_SETTINGS] = Settings.from_config(config)
    if settings.together:
        _set_env_for_run(config, "SIDEEYE_TOGETHER", "1")
    return settings


def settings_of(config: pytest.Config) -> Settings:
    return config.stash[_SETTINGS]


def _set_env_for_run(config: pytest.Config, name: str, value: str) -> None:
    """A per-snapshot setting chosen by an option: in this process's environment for the
    run, where the engine reads it and whence it travels to the agent (settings.py)."""
    before = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
    config.add_cleanup(restore)


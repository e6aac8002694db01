"""How this pytest-sideeye was installed, for the fix texts that name a command: a checkout
of the repository (its scripts/setup.sh beside the package, run by absolute path so that
any folder works) or an installed wheel, which ships no scripts/ (there the fix is the
step itself: start dockerd, run `sideeye agent` as root, ...)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT_UNIT = "sideeye-agent"   # scripts/systemd/sideeye-agent.service, docs/agent.md


def checkout(root: Path = ROOT) -> Path | None:
    """The repository this package runs from (editable install), or None (a wheel)."""
    found = (root / "scripts" / "setup.sh").is_file() and (root / "pyproject.toml").is_file()
    return root if found else None


def setup_command(root: Path = ROOT) -> str | None:
    """`bash /path/to/checkout/scripts/setup.sh`, or None when not run from a checkout."""
    top = checkout(root)
    return f"bash {top / 'scripts' / 'setup.sh'}" if top else None


def fix(step: str, *, installed: str = "", root: Path = ROOT) -> str:
    """A fix text: the step, then from a checkout "(bash .../setup.sh does)", else
    `installed` (how an installed copy does it), if any."""
    setup = setup_command(root)
    if setup:
        return f"{step} ({setup} does)"
    return f"{step} ({installed})" if installed else step


def start_docker() -> str:
    """What to do when Docker does not answer."""
    return fix("start dockerd", installed="systemctl start docker")


def agent_restart(pid: int, root: Path = ROOT, env=None) -> str:
    """How to restart the agent of process pid (this process): by the set-up script that
    started it, by systemd, or by hand."""
    env = os.environ if env is None else env
    if "INVOCATION_ID" in env:   # systemd sets it in a unit's processes
        return f"systemctl restart {AGENT_UNIT}"
    setup = setup_command(root)
    if setup:
        return setup
    return f"stop agent pid {pid} and start `sideeye agent` again as root"

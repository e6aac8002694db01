"""Fix texts name the command that works for this install (install.py): from a checkout
its set-up script by absolute path (any working folder), from a wheel (no scripts/) the
step itself; the agent's "restart to match" note names systemd when systemd runs it.
The wheel's own texts: tests/packaging/test_wheel.py."""
from __future__ import annotations

from support import ROOT

from pytest_sideeye import install
from pytest_sideeye.cli import doctor


def test_a_checkout_names_its_setup_script_by_absolute_path():
    setup = f"bash {ROOT / 'scripts' / 'setup.sh'}"
    assert install.setup_command() == setup
    assert install.fix("start dockerd", installed="systemctl start docker") == \
        f"start dockerd ({setup} does)"
    assert install.agent_restart(7, env={}) == setup
    assert setup in doctor._agent_fix() and setup in doctor._go_fix()


def test_an_installed_copy_names_the_step_itself(tmp_path):
    site = tmp_path / "site-packages"   # a wheel's: the package, no scripts/ beside it
    (site / "pytest_sideeye").mkdir(parents=True)
    assert install.setup_command(site) is None
    assert install.fix("start dockerd", installed="systemctl start docker", root=site) == \
        "start dockerd (systemctl start docker)"
    assert install.fix("link the headers", root=site) == "link the headers"
    assert install.agent_restart(7, site, env={}) == \
        "stop agent pid 7 and start `sideeye agent` again as root"
    assert install.agent_restart(7, site, env={"INVOCATION_ID": "1"}) == \
        "systemctl restart sideeye-agent"

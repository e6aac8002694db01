"""A context rule beside a function spec that captures the context variable itself
(`sideeye snapshot --capture 'context:main.userKey' --capture 'main.waitCanceled: ctx'`):
the pause's capture crashed on the bare variable (IndexError in Plan.context_slots, a
traceback from the CLI, 'snapshot failed' from the agent). Both are captured now, and
the target is resumed as always."""
from __future__ import annotations

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye.engine import take_snapshot

pytestmark = [pytest.mark.usefixtures("needs_root")]


@pytest.mark.parametrize("bpf_capture", ["1", "0"], ids=["bpf", "python"])
def test_context_rule_and_the_context_variable_itself(go_build, tmp_path, monkeypatch,
                                                      bpf_capture):
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf_capture)
    with start_app(go_build("ctxzoo", GO_VERSIONS[1]), "-out", str(tmp_path / "o.json")) as app:
        snap = take_snapshot([app.pid], capture=["context:main.userKey",
                                                 "main.waitCanceled: ctx"])
        assert app.alive()
    [proc] = snap.processes
    assert proc.error is None, proc.error
    [frame] = [f for g in proc.goroutines for f in g.frames
               if f.function == "main.waitCanceled"]
    got = {v.name: v for v in frame.variables}
    # The variable as it is without the rule (its innermost key, a main.traceKey, has no
    # DWARF type: read with its runtime type, tests/capture/test_runtime_types.py).
    assert got["ctx"].available and isinstance(got["ctx"].value, dict), got["ctx"]
    assert got["ctx[main.userKey]"].value == "carol"
    assert got["ctx.Err()"].value is not None   # cancelled: "context canceled"

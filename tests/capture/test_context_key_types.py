"""A context rule's key type is checked before anything is paused: `sideeye snapshot
--capture context:main.noSuchKey` exited 0 with no line and no note. A key type is known
when the program has it as a DWARF type or only as a runtime type descriptor: ctxzoo's
main.traceKey, used only as `ctx.Value(traceKey("t"))`, has no DWARF type entry, and a
DWARF-only check would refuse it. A key type the program has but no captured context held
a value under is a snapshot note (the empty result alone does not say the rule ran)."""
from __future__ import annotations

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye import capture
from pytest_sideeye.binary import analyze, has_runtime_type
from pytest_sideeye.engine import take_snapshot
from pytest_sideeye.errors import CaptureSpecError


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_key_types_known_from_dwarf_or_runtime_type_names(go_build, version):
    info = analyze(go_build("ctxzoo", version), need_layout=False)
    # The point of the runtime names: before Go 1.27 this key type is not in DWARF.
    if version < "1.27":
        assert info.debug.type_by_name("main.traceKey") is None
    for key in ("main.userKey", "main.traceKey", "*main.userKey"):
        assert has_runtime_type(info.path, key), key
    for key in ("main.userKey", "main.traceKey", "main.requestKey", "context.valueCtx"):
        assert capture.knows_key_type(info, key), key
    for key in ("main.noSuchKey", "main.trace", "traceKey", "main.traceKe"):
        assert not capture.knows_key_type(info, key), key


@pytest.mark.usefixtures("needs_root")
def test_unknown_key_type_is_refused_and_a_key_without_values_is_a_note(go_build, tmp_path):
    with start_app(go_build("ctxzoo", GO_VERSIONS[1]), "-out", str(tmp_path / "o.json")) as app:
        with pytest.raises(CaptureSpecError, match="unknown context key type 'main.noSuchKey'"):
            take_snapshot([app.pid], capture=["context:main.noSuchKey"])
        # The plugin's way (one spec for all of a test's services): a note, no failure.
        lax = take_snapshot([app.pid], capture=["context:main.noSuchKey"],
                            strict_capture=False)
        snap = take_snapshot([app.pid], capture=["context:main.traceKey",
                                                 "context:time.Duration"])
        assert app.alive()
    [proc] = lax.processes
    assert "capture: no context key type main.noSuchKey in any target" in proc.notes
    [proc] = snap.processes
    assert proc.error is None, proc.error
    names = {v.name for g in proc.goroutines for f in g.frames for v in f.variables}
    assert any(n.endswith("[main.traceKey]") for n in names), sorted(names)
    assert capture.no_context_value_note("time.Duration") in proc.notes, proc.notes
    assert capture.no_context_value_note("main.traceKey") not in proc.notes

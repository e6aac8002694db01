"""Interface values whose dynamic type has no DWARF entry (capture/rtypes.py): the general
decoder reads them with the runtime's type descriptor. In fixture ctxzoo, the key of
`context.WithValue(canceled, traceKey("t"), "after-cancel")` is a main.traceKey (a string
type only converted to `any`, without DWARF before Go 1.27): captured as the variable
`ctx` of main.waitCanceled, the key decoded to "t" (it was cut, "unknown dynamic type at
0x..."), beside the value the goroutine itself saw under it, on Go 1.21/1.24/1.27 and on
both capture paths."""
from __future__ import annotations

import json

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye.engine import take_snapshot

pytestmark = [pytest.mark.usefixtures("needs_root")]


@pytest.fixture(scope="module", params=GO_VERSIONS)
def zoo(request, go_build, needs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rtypes") / "seen.json"
    with start_app(go_build("ctxzoo", request.param), "-out", str(out)) as app:
        yield app, json.loads(out.read_text())["contexts"]


@pytest.mark.parametrize("bpf_capture", ["1", "0"], ids=["bpf", "python"])
def test_a_key_type_without_dwarf_is_decoded_from_its_runtime_type(zoo, monkeypatch,
                                                                   bpf_capture):
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf_capture)
    app, seen = zoo
    [proc] = take_snapshot([app.pid], capture=["main.waitCanceled: ctx"]).processes
    assert app.alive() and proc.error is None, proc.error
    [(goid, frame)] = [(g.id, f) for g in proc.goroutines for f in g.frames
                       if f.function == "main.waitCanceled"]
    [ctx] = frame.variables
    assert ctx.available and not ctx.truncated and ctx.error is None, ctx
    assert ctx.value["key"] == "t"
    assert ctx.value["val"] == seen[str(goid)]["values"]["main.traceKey"] == "after-cancel"


@pytest.fixture(scope="module", params=GO_VERSIONS)
def boxes(request, go_build, needs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rtypezoo") / "boxes.json"
    with start_app(go_build("rtypezoo", request.param), "-out", str(out)) as app:
        yield request.param, app, json.loads(out.read_text())


@pytest.mark.parametrize("bpf_capture", ["1", "0"], ids=["bpf", "python"])
def test_values_of_types_known_only_at_run_time_are_what_the_program_holds(
        boxes, monkeypatch, bpf_capture):
    """rtypezoo's `boxes []any`: level(-5) and flag_(true) (converted from constants, no
    DWARF before Go 1.27) decode from their runtime types; handler(park), a func, is shown
    as its type name, kind and data word, as the fixture printed them. Go 1.27 has DWARF
    for them all (the func is then named by its code)."""
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf_capture)
    version, app, want = boxes
    [proc] = take_snapshot([app.pid], capture=["main.holdBoxes: boxes"]).processes
    assert app.alive() and proc.error is None, proc.error
    [(goid, frame)] = [(g.id, f) for g in proc.goroutines for f in g.frames
                       if f.function == "main.holdBoxes"]
    assert goid == want["goid"]
    [got] = frame.variables
    assert got.available and not got.truncated and got.error is None, got
    assert got.value[:7] == want["boxes"][:7]
    if tuple(map(int, version.split(".")[:2])) < (1, 27):
        assert got.value[7] == want["boxes"][7]
    else:
        assert got.value[7] == "main.park"

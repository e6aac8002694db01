"""A value the target could read is never cut because its page is not resident: the stop
hook reads without faulting pages in, so its failed reads go to the iterator (which may
fault them in) before the resume. farpage's parameters point at a large global's far end,
never touched: the BPF path and the Python path give the same, full values."""
from __future__ import annotations

import json

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye import engine

pytestmark = pytest.mark.usefixtures("needs_root")
SPEC = {"main.hold": ["p", "*p"]}


def values(snap) -> dict[str, object]:
    [(_g, f)] = list(snap.frames("main.hold"))
    return {v.name: (v.value, v.truncated, v.available) for v in f.variables}


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_untouched_pages_are_read_in_full(go_build, version, monkeypatch):
    with start_app(go_build("farpage", version)) as app:
        bpf = values(engine.take_snapshot([app.pid], capture=SPEC))
        monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", "0")
        python = values(engine.take_snapshot([app.pid], capture=SPEC))
    assert bpf == python
    assert bpf["*p"] == (0, False, True)
    assert "$cut" not in json.dumps(bpf)

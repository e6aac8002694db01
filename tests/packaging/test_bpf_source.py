"""An installation without its BPF program (bpf/snapshot.bpf.c, shipped in the wheel as
pytest_sideeye/bpf/snapshot.bpf.c) says so in one line: `engine.bpf.bpf_source` raises
BpfUnavailable, and the CLI prints it as its one line on stderr, no traceback."""
from __future__ import annotations

import pytest
from oracle import start_app

from pytest_sideeye.cli.main import main
from pytest_sideeye.engine import bpf, take
from pytest_sideeye.errors import BpfUnavailable


@pytest.fixture
def no_bpf_source(monkeypatch, tmp_path):
    """bpf_source looks only where nothing is (its caches cleared before and after)."""
    _forget_source()
    monkeypatch.setattr(bpf, "_SOURCE_PLACES", (tmp_path / "pytest_sideeye" / "bpf" / "snapshot.bpf.c",
                                                tmp_path / "bpf" / "snapshot.bpf.c"))
    yield
    _forget_source()


def _forget_source():
    bpf.bpf_source.cache_clear()
    bpf.bpf_text.cache_clear()


def test_missing_bpf_source_is_a_one_line_error(no_bpf_source):
    with pytest.raises(BpfUnavailable) as e:
        bpf.bpf_source()
    text = str(e.value)
    assert "\n" not in text
    assert "snapshot.bpf.c" in text and "reinstall" in text
    with pytest.raises(BpfUnavailable):   # not cached as found by the first failure
        bpf.source_constants()


def test_cli_without_bpf_source_prints_one_line(needs_root, go_build, no_bpf_source,
                                                monkeypatch, capfd):
    """No program of this layout loaded yet in this process (the test run may have loaded
    one: it would not read the source again), so the snapshot needs the C."""
    monkeypatch.setattr(take, "_programs", {})
    with start_app(go_build("manyparked"), "-n", "10") as app:
        rc = main(["snapshot", "--pid", str(app.pid)])
        assert app.alive()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert rc == 2, err
    (line,) = err.splitlines()
    assert line.startswith(f"sideeye: pid {app.pid}: ") and "lacks its BPF program" in line, line


def test_the_c_is_read_once_per_process(monkeypatch, tmp_path):
    """An upgrade that replaces the C under a running agent must not give it new C with the
    record layouts its Python loaded at start: the constants stay those first read."""
    copy = tmp_path / "bpf" / "snapshot.bpf.c"
    copy.parent.mkdir()
    copy.write_bytes(bpf.bpf_source().read_bytes())
    _forget_source()
    monkeypatch.setattr(bpf, "_SOURCE_PLACES", (copy,))
    try:
        first = bpf.source_constants()
        copy.write_text(copy.read_text().replace("#define READS_PER_PASS ",
                                                 "#define READS_PER_PASS 1 + "))
        assert bpf.source_constants() == first
        assert bpf.bpf_text() != copy.read_bytes()
    finally:
        _forget_source()

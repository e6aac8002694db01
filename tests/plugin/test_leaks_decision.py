"""plugin/leaks.py's decision, on recorded data: which goroutines that appeared during a
test count as leaked. Before and after are the recorded SIGQUIT dump of parkzoo (Go
1.24), "before" without two of its goroutines: a socket reader (main.parkConnRead, IO wait
in net.(*conn).Read) and a sleeper (main.parkSleep)."""
from __future__ import annotations

import copy
from pathlib import Path

from pytest_sideeye.plugin.leaks import LeakOptions, leaked_goroutines
from pytest_sideeye.snapshot.godump import parse_dump_process

DUMP = Path(__file__).resolve().parent.parent / "data" / "dumps" / "parkzoo-go1.24.11.sigquit.txt"


def in_function(proc, function: str) -> int:
    [gid] = [g.id for g in proc.goroutines if any(f.function == function for f in g.frames)]
    return gid


def before_and_after(*new_functions: str):
    after = parse_dump_process(DUMP.read_text())
    new = {in_function(after, f) for f in new_functions}
    before = copy.deepcopy(after)
    before.goroutines = [g for g in before.goroutines if g.id not in new]
    return before, after


def leaked(before, after, held: int = 0, **ignore) -> set[int]:
    return {g.id for g in leaked_goroutines(before, after, LeakOptions(**ignore), held)}


def test_a_socket_reader_is_excused_only_while_the_test_holds_a_connection():
    before, after = before_and_after("main.parkConnRead", "main.parkSleep")
    reader, sleeper = in_function(after, "main.parkConnRead"), in_function(after, "main.parkSleep")
    assert leaked(before, after, held=0) == {reader, sleeper}
    assert leaked(before, after, held=1) == {sleeper}
    assert leaked(before, after, held=3) == {sleeper}   # a held connection excuses readers only


def test_one_held_connection_excuses_one_reader():
    before, after = before_and_after("main.parkConnRead")
    second = copy.deepcopy(next(g for g in after.goroutines if g.id == in_function(after, "main.parkConnRead")))
    second.id = 99999
    after.goroutines.append(second)
    assert len(leaked(before, after, held=1)) == 1
    assert leaked(before, after, held=2) == set()


def test_runtime_goroutines_are_not_leaks():
    after = parse_dump_process(DUMP.read_text())
    runtime_only = [g.id for g in after.goroutines
                    if g.frames and all(f.function.startswith("runtime.") for f in g.frames)]
    assert runtime_only, "the level-2 dump shows the runtime's goroutines"
    before = copy.deepcopy(after)
    before.goroutines = [g for g in before.goroutines if g.id not in runtime_only]
    assert leaked(before, after) == set()


def test_ignore_lists_excuse_what_they_name_and_nothing_else():
    before, after = before_and_after("main.parkSleep")
    sleeper = in_function(after, "main.parkSleep")
    # A function anywhere on the stack, by full or short name.
    assert leaked(before, after, ignore_top_function=["main.parkSleep"]) == set()
    assert leaked(before, after, ignore_top_function=["parkSleep"]) == set()
    assert leaked(before, after, ignore_top_function=["time.Sleep"]) == set()
    # Negative controls: another function, a prefix of the name, a frame named as creator.
    assert leaked(before, after, ignore_top_function=["main.parkSelect"]) == {sleeper}
    assert leaked(before, after, ignore_top_function=["main.parkSlee"]) == {sleeper}
    assert leaked(before, after, ignore_created_by=["main.parkSleep"]) == {sleeper}
    # The creator, by full name only as it is spelled.
    creator = next(g for g in after.goroutines if g.id == sleeper).created_by.function
    assert leaked(before, after, ignore_created_by=[creator]) == set()
    assert leaked(before, after, ignore_created_by=[creator + "x"]) == {sleeper}

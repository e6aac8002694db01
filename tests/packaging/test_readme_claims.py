"""What the README claims about the pause agrees with what was measured: its Performance
table is taken from the benchmark runs recorded beside the benchmark
(benchmarks/engine_bench.out, appended by `engine_bench.py --record`), and every pause
figure of its opening paragraph lies within that table's ranges."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RECORD = ROOT / "benchmarks" / "engine_bench.out"
SIZES = {"a thousand": 1_000, "ten thousand": 10_000, "a hundred thousand": 100_000}
NUMBER = r"\d[\d,]*(?:\.\d+)?"


@dataclass
class Run:
    command: str
    load: float
    rows: dict[int, dict[str, str]] = field(default_factory=dict)   # goroutines -> cells


def recorded_runs(text: str) -> list[Run]:
    """Each `$ command` of the record, its header's load average and its table."""
    runs: list[Run] = []
    head: list[str] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            runs.append(Run(line[2:], 0.0))
        elif m := re.search(r"load average ([\d.]+)", line):
            runs[-1].load = float(m.group(1))
        elif line.startswith("| parked |"):
            head = cells(line)
        elif line.startswith("| ") and head:
            row = dict(zip(head, cells(line)))
            runs[-1].rows[number(row["parked"])] = row
    return runs


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def number(text: str) -> float:
    return float(text.replace(",", ""))


def first_paragraph(text: str) -> str:
    body = text.split("\n\n")
    return next(p for p in body if not p.startswith("#")).replace("\n", " ")


def performance_section(text: str) -> str:
    start = text.index("## Performance")
    return text[start:text.index("\n## ", start + 1)]


def readme_table(section: str) -> dict[int, dict[str, str]]:
    lines = [line for line in section.splitlines() if line.startswith("|")]
    head = cells(lines[0])
    return {int(number(cells(line)[0])): dict(zip(head, cells(line))) for line in lines[2:]}


def rounds_to(text: str, value: float) -> bool:
    """`text` is `value` as the README writes it: rounded to the digits it shows."""
    digits = len(text.split(".")[1]) if "." in text else 0
    return abs(number(text) - value) <= 0.5 * 10 ** -digits + 1e-9


def span(cell: str) -> tuple[str, str]:
    """'8.4-13.8 ms (7.7)' -> ('8.4', '13.8'); '0.98 ms' -> ('0.98', '0.98')."""
    m = re.match(rf"({NUMBER})(?:-({NUMBER}))?", cell)
    assert m, cell
    return m.group(1), m.group(2) or m.group(1)


def best(cell: str) -> str:
    m = re.search(rf"\(({NUMBER})\)", cell)
    assert m, f"no (best) in {cell!r}"
    return m.group(1)


def medians(runs: list[Run], size: int, column: str) -> list[float]:
    return [number(r.rows[size][column].split()[0]) for r in runs
            if size in r.rows and column in r.rows[size]]


def mins(runs: list[Run], size: int, column: str) -> list[float]:
    return [number(r.rows[size][column].split("(")[1].rstrip(")")) for r in runs
            if size in r.rows and column in r.rows[size]]


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    found = recorded_runs(RECORD.read_text())
    assert found, f"no benchmark run recorded in {RECORD}"
    return found


def test_the_record_is_what_the_benchmark_prints(runs):
    """Its tables have the columns engine_bench.py prints now, for the sizes it ran."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import engine_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = RECORD.read_text()
    for run in runs:
        capture = "--capture" in run.command
        headers = ["| " + " | ".join(engine_bench.columns(capture, walk)) + " |"
                   for walk in (False, True)]   # with the pre-read's columns or not
        assert any(h in text for h in headers)
        sizes = re.search(r"--sizes ([\d,]+)", run.command)
        assert sizes, run.command
        assert sorted(run.rows) == sorted(int(s) for s in sizes.group(1).split(","))
        assert run.load > 0, "the record's header has no load average"


def test_the_performance_table_is_the_recorded_runs(readme, runs):
    """Each figure of the table is the range (or maximum) over the recorded runs, as
    rounded in the README; each size of the table was recorded."""
    table = readme_table(performance_section(readme))
    assert table
    checked = 0
    for size, row in table.items():
        assert any(size in r.rows for r in runs), f"{size:,} goroutines: no recorded run"
        for column, recorded, kind in (
                ("pause (best)", "pause ms (min)", "range"),
                ("the target's own `runtime.Stack(buf, true)`", "runtime.Stack ms", "range"),
                ("pause with capture", "pause with capture (min)", "range"),
                ("frames captured", "frames captured", "range"),
                ("longest stretch with interrupts off",
                 "longest interrupts-off stretch (hook_walk, max)", "max")):
            cell = row.get(column, "")
            values = medians(runs, size, recorded)
            if not cell:
                assert not values, f"{size:,} {column}: recorded but not in the README"
                continue
            assert values, f"{size:,} {column}: in the README but not recorded"
            lo, hi = span(cell)
            if kind == "max":
                assert lo == hi and rounds_to(hi, max(values)), (size, column, cell, values)
            else:
                assert rounds_to(lo, min(values)) and rounds_to(hi, max(values)), \
                    (size, column, cell, values)
            if column == "pause (best)":
                assert rounds_to(best(cell), min(mins(runs, size, recorded))), (cell, runs)
            checked += 1
    assert checked >= 4


def test_the_performance_section_says_how_loaded_the_machine_was(readme, runs):
    """Numbers from a loaded machine say so: the note gives the recorded runs' load
    averages and their command."""
    section = performance_section(readme)
    m = re.search(rf"load average (?:of )?({NUMBER})(?:-({NUMBER}))?", section)
    assert m, "the Performance note does not give the machine's load average"
    loads = [r.load for r in runs]
    assert rounds_to(m.group(1), min(loads)) and rounds_to(m.group(2) or m.group(1),
                                                         max(loads)), (m.group(0), loads)
    for run in runs:
        options = run.command.split("engine_bench.py", 1)[1].replace("--record", "").strip()
        assert options in section, f"the note does not give the command ({options})"


def test_the_opening_paragraph_claims_no_pause_the_table_does_not_show(readme):
    """Every pause figure of the opening ('N ms at a thousand goroutines') lies within
    the Performance table's pause for that size, from its best to its slowest median;
    the opening states no pause any other way ('under a millisecond')."""
    opening = first_paragraph(readme)
    table = readme_table(performance_section(readme))
    figure = re.compile(rf"({NUMBER})(?:-({NUMBER}))? ms at ({'|'.join(SIZES)})")
    found = list(figure.finditer(opening))
    assert found, f"no pause figure in the opening: {opening[:300]}"
    for m in found:
        row = table[SIZES[m.group(3)]]["pause (best)"]
        low, high = float(best(row)), number(span(row)[1])
        for text in filter(None, m.group(1, 2)):
            assert low <= number(text) <= high, \
                f"the opening says {m.group(0)!r}; the table: {row}"
    rest = figure.sub("", opening)
    assert not re.search(r"millisecond|\bms\b|\bus\b|microsecond", rest), \
        f"a pause claim the test cannot check: {rest}"

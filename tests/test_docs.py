"""Docs that cannot drift: the numbers, lists, paths and commands the README and docs/
show are checked here against the code, the sweep files and the reference report."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
REFERENCE = ROOT / "docs" / "reference" / "REPORT.md"


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _sweep_table() -> dict[str, str]:
    """sweep name -> the 'cells' cell of the table in docs/running.md."""
    rows = re.findall(r"^\| `(\w+)` \| [^|]* \| ([^|]*) \|", (ROOT / "docs" / "running.md")
                      .read_text(), flags=re.M)
    return dict(rows)


def test_sweep_table_lists_every_shipped_sweep():
    from connbench.plan.sweep import shipped_sweeps

    assert sorted(_sweep_table()) == sorted(shipped_sweeps())


@pytest.mark.slow  # paper expands 10,350 trials (~15 s)
@pytest.mark.parametrize("name", sorted(_sweep_table()))
def test_sweep_sizes_in_running_md(name):
    from connbench.plan.sweep import load_sweep

    cell = _sweep_table()[name]
    trials = load_sweep(name, skip_invalid=True).trials
    assert _int(re.match(r"[\d,]+", cell).group()) == len(trials), cell
    for n, kind in re.findall(r"([\d,]+) (speed|memory|train)", cell):
        assert _int(n) == sum(t.kind == kind for t in trials), (cell, kind)


def test_seed_counts_in_report_md():
    from connbench.plan.sweep import load_sweep

    text = (ROOT / "docs" / "report.md").read_text()
    quoted = {name: int(n) for name, n in re.findall(
        r"`(\w+)`(?: sweep trains)?(?: at least)? (\d+) seeds per arm", text)}
    assert set(quoted) == {"default", "trask"}  # the sentence is there
    for name, n in quoted.items():
        arms: dict[tuple, set] = {}
        for t in load_sweep(name, skip_invalid=True).trials:
            if t.kind == "train" and t.option("role", "claim") == "claim":
                key = (t.task_spec, t.structure_spec, t.cell, t.hidden_request)
                arms.setdefault(key, set()).add(t.seed)
        assert min(len(s) for s in arms.values()) == n, name


def test_row_counts_quoted_match_the_reference_report():
    rows = re.search(r"Sweep: `default`: ([\d,]+) rows, (\d+) cells", REFERENCE.read_text())
    assert rows, "the reference report's Setup line changed shape"
    for doc in (README, ROOT / "docs" / "running.md"):
        quoted = re.findall(r"([\d,]{4,}) rows", doc.read_text())
        assert quoted and all(q == rows.group(1) for q in quoted), (doc.name, quoted)
    assert f"{rows.group(2)} cells" in README.read_text()


def test_structure_table_is_the_registry():
    from connbench.nn import structures

    text = README.read_text()
    table = text[text.index("## The structures"):].split("\n\n")[1]
    names = re.findall(r"^\| `(\w+)` ", table, flags=re.M)
    assert names == [e["name"] for e in structures.REGISTRY.list()]


def _commands() -> list[tuple[str, str]]:
    """(doc, command) for every `connbench ...` line in a shell code block."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                # the command alone: no comment, prompt, redirection or pipe
                line = re.split(r" #| > | \| ", line)[0].strip().removeprefix("$ ")
                for prefix in (".venv/bin/connbench ", "connbench ", "python -m connbench "):
                    if line.startswith(prefix):
                        out.append((doc.name, line[len(prefix):]))
    return out


@pytest.mark.parametrize("doc,command", _commands())
def test_commands_shown_in_the_docs_parse(doc, command):
    from connbench.cli import COMMANDS, build_parser

    argv = shlex.split(command)
    if argv == ["--version"]:
        return
    assert argv[0] in COMMANDS, f"{doc}: `connbench {command}`: no such command"
    build_parser(argv[0]).parse_args(argv)  # argparse exits on an unknown option


def test_paths_cited_in_the_docs_exist():
    pattern = re.compile(r"(?<![\w/.])((?:bench|tasks|tests|docs|benchmarks)/[\w/.\-]*\w)")
    missing = [(doc.name, p) for doc in DOCS for p in pattern.findall(doc.read_text())
               if not (ROOT / p).exists()]
    assert not missing


def test_license_matches_pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_reference_report_is_where_make_bench_does_not_write():
    make = (ROOT / "Makefile").read_text()
    assert "docs/reference" not in make
    ignored = (ROOT / ".gitignore").read_text().split()
    # anchored: the top-level output folders only, never the package's own
    # bench/results/ (an unanchored `results/` once kept two modules out of git)
    assert "/results/" in ignored and "/reports/" in ignored
    assert "docs/reference/REPORT.md" in README.read_text()
    assert (ROOT / "docs" / "reference" / "figures").is_dir()



def _readme_summary() -> str:
    text = README.read_text()
    m = re.search(r"<!-- reference-summary -->\n(.*?)<!-- /reference-summary -->", text,
                  flags=re.S)
    assert m, "README.md lost its reference-summary block"
    return m.group(1)


def test_readme_summary_is_the_reference_report():
    """The README's summary of the reference run: its answer paragraph and claims rows
    are the report's own lines, and every number it quotes appears in the report."""
    block, report = _readme_summary(), REFERENCE.read_text()
    answer = [ln for ln in block.splitlines() if ln.startswith("**")]
    assert answer and all(ln in report.splitlines() for ln in answer), answer
    claims = [ln for ln in block.splitlines() if re.match(r"^\| \d+ \|", ln)]
    table = [ln for ln in report.splitlines() if re.match(r"^\| \d+ \|", ln)]
    reported = [ln for ln in table if ln.count("|") == 4]  # the claims table's rows
    assert claims and claims == reported[:len(claims)] and len(claims) == 5, claims
    number = r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\d])"
    prose = re.sub(r"^\| .*$", "", block, flags=re.M)
    numbers = {n.rstrip(",") for n in re.findall(number, prose)}
    reported = {n.rstrip(",") for n in re.findall(number, report)}
    missing = sorted(numbers - reported)
    assert not missing, f"README summary numbers not in the reference report: {missing}"

"""The docs run: every fenced Python and shell block of the Markdown files in DOCS runs, or says why it does not.

A file's blocks run in order in one scratch folder, its Python blocks in one namespace, as a reader pastes
them. A shell line that is a plain ``egsbench`` command runs in this process with CHEAP appended to ``run``
and ``sweep`` (a sweep runs two methods at one seed, in this process: ``cheap_sweeps``); ``egsbench.run`` of
a smoke config from Python is CHEAP too (``cheap_python_runs``); other lines run in bash. Each line and
Python block has a time limit. A block that cannot run here (GPU-days, a launcher, pip install, data under
/data) is marked on the line before its opening fence::

    <!-- not-run: why it does not run here (and what tests it instead, if anything does) -->
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from egsbench.benchmark.cli import main
from egsbench.testing.reliability import FAST

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("results/**/*.md")})
PYTHON, SHELL = {"python", "py"}, {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*not-run:(?P<why>.*?)-->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")
# What `egsbench run` and `egsbench sweep` lines get appended: the cheapest run (one step per phase, a few dozen
# images; egsbench.testing.reliability.FAST).
CHEAP = dict.fromkeys(("run", "sweep"), [x for o in FAST for x in ("--set", o)])
NAMESPACE = "__docs__"  # the module name of what doc blocks define
LIMIT_S = 300  # per shell line or Python block: far above any of them on a loaded 2-core machine
HOW_TO_MARK = (
    "A block that is not meant to run in the tests (GPU-days, a multi-node launch, pip install, data the tests "
    "do not have) needs a marker on the line right before its opening fence: <!-- not-run: why -->"
)


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: str | None  # the marker's reason; None when the block runs

    @property
    def where(self) -> str:
        name = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{name}:{self.line} ({self.lang})"


def doc_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` whose language is Python or a shell, with its not-run reason if marked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        lang = (fence["info"].split() or [""])[0].lower()
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.fullmatch(previous)
        if lang in PYTHON | SHELL:
            indent = len(fence["indent"])
            code = "\n".join(line[indent:] for line in lines[i + 1 : end])
            blocks.append(Block(path, i + 1, lang, code, marker["why"].strip() if marker else None))
        i = end + 1
    return blocks


def _runnable(path: Path) -> list[Block]:
    return [b for b in doc_blocks(path) if b.not_run is None]


class _Deadline(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    """Raise in this (the main) thread when ``what`` runs past ``seconds`` (no limit where there is no SIGALRM)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise _Deadline(f"{what} ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def shell_lines(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, blank and comment lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run_shell_line(line: str, block: Block) -> str:
    """Run one command in the current folder; return its output, fail the test on a non-zero exit."""
    argv = shlex.split(line, comments=True)
    plain = argv and argv[0] == "egsbench" and not any(t in {"&&", "||", "|", ";", ">", ">>", "<"} for t in argv)
    if plain and "$" not in line:
        argv = argv[1:] + CHEAP.get(argv[1] if len(argv) > 1 else "", [])
        out, err = io.StringIO(), io.StringIO()
        with deadline(LIMIT_S, line), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        output = out.getvalue() + err.getvalue()
    else:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=LIMIT_S)
        code, output = done.returncode, done.stdout + done.stderr
    assert code == 0, f"{block.where}: `{line}` exited {code}:\n{output[-3000:]}\n{HOW_TO_MARK}"
    return output


@contextlib.contextmanager
def doc_module():
    """The namespace a file's Python blocks share: a module in ``sys.modules`` while they run (dataclasses look
    their class's module up there)."""
    module = types.ModuleType(NAMESPACE)
    sys.modules[NAMESPACE] = module
    try:
        yield module.__dict__
    finally:
        del sys.modules[NAMESPACE]


def run_blocks(path: Path) -> str:
    """Run ``path``'s runnable blocks in order in the current folder; return what they printed."""
    with doc_module() as namespace:
        return _run_blocks(path, namespace)


def _run_blocks(path: Path, namespace: dict) -> str:
    outputs = []
    for block in _runnable(path):
        if block.lang in PYTHON:
            out = io.StringIO()
            code = compile("\n" * block.line + block.code, str(block.path), "exec")  # tracebacks name doc lines
            try:
                with deadline(LIMIT_S, block.where), contextlib.redirect_stdout(out):
                    exec(code, namespace)
            except Exception as err:
                raise AssertionError(f"{block.where} raised {type(err).__name__}: {err}\n{HOW_TO_MARK}") from err
            outputs.append(out.getvalue())
        else:
            outputs += [run_shell_line(line, block) for line in shell_lines(block.code)]
    return "".join(outputs)


@pytest.fixture
def cheap_python_runs(monkeypatch):
    """``egsbench.run`` of a bundled CIFAR-10 smoke config from a Python block runs at the CHEAP size too."""
    import egsbench.benchmark.api as api

    load_config = api.load_config

    def cheap(source: str, overrides: list[str] | None = None):
        smoke = source.startswith("smoke/") and source.endswith("-cifar10")
        return load_config(source, [*(overrides or []), *(FAST if smoke else [])])

    monkeypatch.setattr(api, "load_config", cheap)


@pytest.fixture
def cheap_sweeps(monkeypatch):
    """A sweep runs its first two methods at its first seed, each run in this process through ``main`` as its
    subprocess would: all but the process boundary (tests/harness/test_sweep.py tests that) at a fraction of the
    cost (the five-method sweep of two seeds is a minute of runs even at CHEAP sizes; tests/harness/test_sweep.py
    plans all of it)."""
    import egsbench.benchmark.sweep as sweep

    load_sweep = sweep.load_sweep

    def smaller(source):
        spec = load_sweep(source)
        return dataclasses.replace(spec, methods=spec.methods[:2], seeds=spec.seeds[:1])

    monkeypatch.setattr(sweep, "load_sweep", smaller)

    def run(command, env=None, capture_output=False, text=False):
        assert command[1:3] == ["-m", "egsbench"], command
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(command[3:])
        return subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())

    monkeypatch.setattr(sweep, "subprocess", types.SimpleNamespace(run=run))  # sweep.py's name, not the module


@pytest.fixture
def doc_registrations():
    """Undo what doc blocks register (the example task of docs/adding-a-task.md): classes defined in their namespace."""
    from egsbench.benchmark.registry import METHODS, SPACES, TASKS

    yield
    for registry in (METHODS, SPACES, TASKS):
        for name, obj in list(registry._entries.items()):
            if getattr(obj, "__module__", None) == NAMESPACE:
                del registry._entries[name]


# What a file's blocks must leave behind beyond exiting cleanly: its run folders, and lines of what they printed.
EXPECTED = {
    "README.md": (
        ["runs/notebook/model.safetensors", "runs/smoke/record.json", "runs/sweep/report.html"],
        ["NetworkCIFAR", "one EGS step: loss", "against darts", "genotype agreement"],
    ),
    "docs/adding-a-task.md": (["runs/stripes/record.json"], ["stripes test accuracy"]),
}


@pytest.mark.parametrize("path", [p for p in DOCS if _runnable(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_blocks_run(path, tmp_path, monkeypatch, cheap_python_runs, cheap_sweeps, doc_registrations):
    monkeypatch.chdir(tmp_path)
    printed = run_blocks(path)
    files, lines = EXPECTED.get(path.relative_to(ROOT).as_posix(), ([], []))
    for name in files:
        assert (tmp_path / name).is_file(), f"{path.name}'s blocks left no {name}"
    for line in lines:
        assert line in printed, f"{path.name}'s blocks never printed {line!r}:\n{printed[-3000:]}"


def test_every_marker_gives_a_reason_and_stands_before_a_block():
    problems = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not (line.lstrip().startswith("<!--") and "not-run" in line):
                continue
            marker = MARKER.fullmatch(line.strip())
            following = next((x for x in lines[i + 1 :] if x.strip()), "")
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            if marker is None or not marker["why"].strip():
                problems.append(f"{where}: write the marker as <!-- not-run: why --> on a line of its own")
            elif not FENCE.match(following) or following.strip() == "```":
                problems.append(f"{where}: a not-run marker must stand right before the block's opening fence")
    assert not problems, "\n".join(problems)


def test_marking_and_chaining_rules(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```python\nx = 1\n```\n\n<!-- not-run: needs a GPU -->\n```bash\negsbench run paper/egs-cifar10\n```\n"
        "```yaml\nnot: code\n```\n```python\nprint(x + 1)\n```\n"
    )
    blocks = doc_blocks(doc)
    assert [(b.line, b.lang, b.not_run) for b in blocks] == [
        (1, "python", None),
        (6, "bash", "needs a GPU"),
        (12, "python", None),
    ]
    assert run_blocks(doc) == "2\n"  # one namespace per file; the marked block is skipped
    doc.write_text("text\n\n```python\nraise ValueError('broken')\n```\n")
    with pytest.raises(AssertionError, match=r"doc.md:3 \(python\) raised ValueError: broken\n.*<!-- not-run: why -->"):
        run_blocks(doc)
    assert shell_lines("# a comment\negsbench run a \\\n    --out b   # note\n\nls\n") == [
        "egsbench run a --out b   # note",
        "ls",
    ]


@pytest.mark.parametrize(
    ("doc", "protocol"),
    [("docs/adding-a-task.md", "tasks.base.Task"), ("docs/adding-a-method.md", "methods.base.SearchMethod")],
)
def test_the_guides_name_every_member_of_their_protocol(doc, protocol):
    module, name = protocol.rsplit(".", 1)
    cls = getattr(importlib.import_module(f"egsbench.{module}"), name)
    members = {m for m in [*vars(cls), *cls.__annotations__] if not m.startswith("_")}
    spans = re.findall(r"`([^`\n]+)`", (ROOT / doc).read_text(encoding="utf-8"))  # inline code, not fenced blocks
    missing = sorted(m for m in members if not any(re.search(rf"\b{m}\b", span) for span in spans))
    assert not missing, f"{doc} never names {missing} of {name}: add them to its tables of members"

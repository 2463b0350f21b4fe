"""Run the README's command blocks, check what it says they print, and regenerate its quoted outputs.

Every ```bash or ```console block of README.md follows a marker line that says how it is checked:

    <!-- readme: run ID [session=NAME] [slow] [full] [figures] -->
    <!-- readme: skip ID: why it is not run here -->
    <!-- readme: output ID session=NAME file=GLOB -->   (a plain ``` block: lines of a file a run wrote)

A `run` block's commands run in order in the folder of its session (blocks of one session share it).
A bash block is one command per line (`\\` continues it; a trailing `# exits N ...` comment gives the
expected exit code, else 0). A console block's `$ ` lines are commands and the lines below them what
they print: each quoted line must appear in the command's output, in order (`...` skips lines).
Lines are compared in their *shape* (every number replaced by `#`, runs of spaces by one), so the
quick checks can run the commands with small settings (`--small`: tiny training keys appended to every
`runner train` and `runner reproduce experiment=...`, except in a `full` block). A quoted `wrote FILE` line also checks that FILE exists.

    python scripts/readme.py check [--small] [--slow] [IDS...]   run the blocks, report every drift (exit 1)
    python scripts/readme.py figures [--write]                    run the `figures` blocks as written and
        print each quoted line next to the line the real run printed; --write puts the real lines into README.md

`figures` is how the README's quoted numbers and timings are made: they are never typed in.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- readme: (run|skip|output) ([\w-]+)(:?)(.*?)\s*-->$")
# Tiny training keys for the quick checks: 20 steps, evaluated twice, whatever the model.
SMALL = ["train.epochs=null", "train.steps=20", "train.eval_every=10"]
# The small keys show in a run's overrides, and replace the README's own train.epochs: left out of both sides.
SMALL_KEYS = re.compile(r"(?<!\S)'?train\.(epochs|steps|eval_every)=\S*")
HASH_OR_SIZE = re.compile(r"\b[0-9a-f]{16}\b|\d[\d.,]*\s?(kB|MB|GB|B)\b|\b\d+[smhd]\b")
NUMBER = re.compile(r"[+-]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?")
# Parts of a line that differ between two runs of the same commands: timings, ages, dates and clock times.
VOLATILE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[-:]\d{2}[-:]\d{2}|[+-]?\d+(\.\d+)?s\b|\b\d+[smhd]\b|"
                      r"[+-]?\d+(\.\d+)? ?(kB|MB|GB)\b|^train_seconds .*|^\S*_seconds .*")


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


@dataclass
class Block:
    kind: str
    id: str
    options: dict
    lang: str
    line: int
    body: list[str]
    reason: str = ""

    @property
    def commands(self) -> list[Command]:
        return parse_commands(self.lang, self.body)


def _options(text: str) -> dict:
    out = {}
    for word in shlex.split(text):
        key, eq, value = word.partition("=")
        out[key] = value if eq else True
    return out


def blocks(text: str) -> list[Block]:
    """Every fenced block of the README, with the marker above it (kind "" when it has none)."""
    lines = text.splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = lines[index]
        if not fence.startswith("```"):
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        kind, ident, options, reason = "", f"line-{index + 1}", {}, ""
        if marker:
            kind, ident = marker.group(1), marker.group(2)
            if marker.group(3):
                reason = marker.group(4).strip()
            else:
                options = _options(marker.group(4))
        found.append(Block(kind, ident, options, fence[3:].strip(), index + 1, lines[index + 1:end], reason))
        index = end + 1
    return found


def parse_commands(lang: str, body: list[str]) -> list[Command]:
    commands: list[Command] = []
    if lang == "console":
        for line in body:
            if line.startswith("$ "):
                commands.append(_command(line[2:]))
            elif commands and line.strip():
                commands[-1].expected.append(line)
        return commands
    joined = "\n".join(body).replace("\\\n", " ")
    return [_command(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _command(line: str) -> Command:
    text, _, comment = line.partition("  #")
    code = re.match(r"\s*exits (\d+)", comment)
    return Command(text.strip(), exit_code=int(code.group(1)) if code else 0)


def shape(line: str) -> str:
    """A line with every number (hashes, sizes and ages included) as `#` and runs of spaces as one: what a
    small run must print alike."""
    return " ".join(NUMBER.sub("#", HASH_OR_SIZE.sub("#", line)).split())


def steady(line: str) -> str:
    """A line without the parts that change from run to run (timings, ages, dates): what must repeat exactly."""
    return " ".join(VOLATILE.sub("~", line.strip()).split())


def _resolve_dates(text: str, cwd: Path) -> str:
    """A README path with a date and time (`outputs/multirun/2026-12-01/16-01-11`, `<date>/<time>`) names the
    newest run folder of that shape in the session's folder."""
    def newest(match: re.Match) -> str:
        prefix = match.group(1)
        places = sorted(glob.glob(str(cwd / prefix / "*" / "*")), key=os.path.getmtime)
        return str(Path(places[-1]).relative_to(cwd)) if places else match.group(0)

    return re.sub(r"(outputs(?:/multirun)?)/(?:\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}|<date>/<time>)", newest, text)


def argv_of(command: Command, cwd: Path, small: bool) -> list[str]:
    words = shlex.split(_resolve_dates(command.text, cwd))
    if words[:4] == ["pip", "install", "-e", "."] and "&&" in words:
        words = words[words.index("&&") + 1:]  # the package is installed already
    if not words or words[0] != "runner":
        raise ValueError(f"not a runner command: {command.text}")
    args = words[1:]
    trains = args[:1] == ["train"] or (args[:1] == ["reproduce"] and any(a.startswith("experiment=") for a in args))
    if small and trains and "--help" not in args:
        args = [*[a for a in args if not SMALL_KEYS.fullmatch(a)], *SMALL]
    return args


def run(args: list[str], cwd: Path, module: bool = True) -> tuple[int, str]:
    """`runner ARGS` (or `python ARGS`) in `cwd`: exit code and output, the folder's own path left out."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("COLUMNS", None)
    command = [sys.executable, *(["-m", "overparam.cli.main"] if module else []), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    return result.returncode, (result.stdout + result.stderr).replace(f"{cwd}/", "")


def match_lines(expected: list[str], actual: list[str], key) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair each quoted line with the first later output line of the same `key`; (pairs, lines not found)."""
    pairs, missing, position = [], [], 0
    for line in expected:
        if line.strip() in ("...", ""):
            continue
        for index in range(position, len(actual)):
            if key(actual[index]) == key(line):
                pairs.append((line, actual[index]))
                position = index + 1
                break
        else:
            missing.append(line)
    return pairs, missing


@dataclass
class Outcome:
    block: Block
    problems: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)


def run_block(block: Block, cwd: Path, small: bool) -> Outcome:
    """Run one block's commands in `cwd`; every way it differs from what the README says."""
    outcome = Outcome(block)
    small = small and "full" not in block.options  # a preset's claims hold only at its own settings
    if block.kind == "output":
        files = sorted(glob.glob(str(cwd / block.options["file"])))
        text = "\n".join(Path(f).read_text(encoding="utf-8") for f in files)
        if not files:
            outcome.problems.append(f"no file {block.options['file']}")
        pairs, missing = match_lines(block.body, text.splitlines(), key=shape)
        outcome.pairs = pairs
        outcome.problems += [f"not in {block.options['file']}: {line}" for line in missing]
        return outcome
    if block.lang == "python":
        code, output = run(["-c", "\n".join(block.body)], cwd, module=False)
        if code != 0:
            outcome.problems.append(f"the snippet exited {code}: {output[-1500:]}")
        return outcome
    for command in block.commands:
        args = argv_of(command, cwd, small)
        resolved = _resolve_dates(command.text, cwd)
        if block.lang == "console" and resolved != command.text:
            outcome.pairs.append((f"$ {command.text}", f"$ {resolved}"))
        code, output = run(args, cwd)
        if code != command.exit_code:
            outcome.problems.append(f"`{command.text}` exited {code}, not {command.exit_code}: {output[-1500:]}")
            continue
        key = (lambda line: shape(SMALL_KEYS.sub("", line))) if small else shape
        pairs, missing = match_lines(command.expected, output.splitlines(), key=key)
        outcome.pairs += pairs
        outcome.problems += [f"`{command.text}` did not print: {line}" for line in missing]
        for line in command.expected:
            named = re.match(r"wrote (\S+)", line)
            if named and not (cwd / _resolve_dates(named.group(1), cwd)).exists():
                outcome.problems.append(f"`{command.text}` did not write {named.group(1)}")
    return outcome


def run_blocks(selected: list[Block], root: Path, small: bool) -> list[Outcome]:
    outcomes = []
    for block in selected:
        cwd = root / block.options.get("session", block.id)
        cwd.mkdir(parents=True, exist_ok=True)
        outcomes.append(run_block(block, cwd, small))
    return outcomes


def selection(all_blocks: list[Block], ids: list[str], *, slow: bool, figures: bool = False) -> list[Block]:
    """The blocks to run: those named (with the earlier blocks of their sessions), else every quick one."""
    chosen = [b for b in all_blocks if b.kind in ("run", "output")]
    if figures:
        wanted = {b.options.get("session", b.id) for b in chosen if "figures" in b.options}
        return [b for b in chosen if b.options.get("session", b.id) in wanted]
    if ids:
        unknown = set(ids) - {b.id for b in chosen}
        if unknown:
            raise SystemExit(f"no run or output block with id {', '.join(sorted(unknown))}")
        sessions = {b.options.get("session", b.id) for b in chosen if b.id in ids}
        last = max(i for i, b in enumerate(chosen) if b.id in ids)
        return [b for i, b in enumerate(chosen) if b.options.get("session", b.id) in sessions and i <= last]
    if not slow:
        slow_sessions = {b.options.get("session", b.id) for b in chosen if "slow" in b.options}
        chosen = [b for b in chosen if b.options.get("session", b.id) not in slow_sessions]
    return chosen


def write_figures(text: str, outcomes: list[Outcome]) -> str:
    """README text with every quoted line (and command) replaced by what the real run printed (its block only)."""
    lines = text.splitlines()
    for outcome in outcomes:
        start = outcome.block.line
        body = lines[start:start + len(outcome.block.body)]
        for quoted, real in outcome.pairs:
            body[body.index(quoted)] = real.rstrip()
        lines[start:start + len(body)] = body
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("check", "figures"))
    parser.add_argument("ids", nargs="*")
    parser.add_argument("--small", action="store_true", help="append tiny training keys (check only)")
    parser.add_argument("--slow", action="store_true", help="also the blocks marked slow")
    parser.add_argument("--write", action="store_true", help="figures: write the real lines into README.md")
    parser.add_argument("--keep", help="run in this folder (kept) instead of a temporary one")
    args = parser.parse_intermixed_args(argv)
    text = README.read_text(encoding="utf-8")
    chosen = selection(blocks(text), args.ids, slow=args.slow, figures=args.action == "figures")
    with tempfile.TemporaryDirectory(prefix="overparam-readme-") as folder:
        root = Path(args.keep or folder)
        outcomes = run_blocks(chosen, root, small=args.small and args.action == "check")
    problems = [f"{o.block.id} (README line {o.block.line}): {p}" for o in outcomes for p in o.problems]
    if args.action == "figures":
        for outcome in outcomes:
            for quoted, real in outcome.pairs:
                if quoted.rstrip() != real.rstrip():
                    print(f"{outcome.block.id}:\n  README: {quoted}\n  real:   {real}")
                if steady(quoted) != steady(real) and not args.write:
                    problems.append(f"{outcome.block.id}: the README quotes `{quoted.strip()}`, a real run prints "
                                    f"`{real.strip()}`")
        if args.write and not problems:
            README.write_text(write_figures(text, outcomes), encoding="utf-8")
            print("wrote README.md")
    print("\n".join(problems) if problems else f"{len(outcomes)} block(s) as the README says")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The docs run (issue 15): every ```python block of README.md and docs/*.md is executed, and every
`fpa-*` command line in their code blocks and inline code names only options the command has.

Conventions for writers of the docs:
- A python block runs in a fresh temporary folder that holds `ckpt.pt` and `model.pt` (copies of the
  embedded default model); the names in `PROVIDED` (placeholders such as `batches`) are predefined.
- A block that cannot run (a signature summary, hours of work) is preceded by a line
  `<!-- not-run: why -->`; use it sparingly.
- Command lines are checked in ```bash/```sh/```console blocks, unlabelled blocks (synopses such as
  `fpa-export onnx [CKPT] [--graph image|steps]` included; `--[no-]x` means both spellings) and inline
  code spans starting with `fpa-`. Lines in `CHEAP` run for real, in a temporary folder as above.
Failures name the file and the line where the block starts.
"""
from __future__ import annotations

import re
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [path for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if path.is_file()]
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)")
SHELL = {"", "bash", "sh", "shell", "console"}

# Blocks in docs whose owners have yet to add a `<!-- not-run -->` line or a fix: (file, a line of the
# block) → (what to do, why). "skip" does not run the block; "xfail" runs it and expects the failure.
# An entry whose block no longer exists is ignored, so the table cannot go stale into a failure; remove
# entries once the docs are fixed.
PENDING = {
    ("docs/EXPORT.md", "sampler = make_sampler(model=None |"): ("skip", "a signature summary, not code"),
    ("docs/SAMPLING.md", "report = sample_folder(SampleRun(\"out/fid\", n=50000"):
        ("skip", "50,000 samples (and the block lacks `from pathlib import Path`)"),
}


def _provided_batches():
    import torch

    generator = torch.Generator().manual_seed(0)
    return [torch.rand(4, 3, 32, 32, generator=generator) for _ in range(2)]


PROVIDED = {"batches": _provided_batches}    # placeholder name → factory of a small stand-in

# Command lines cheap enough to run for real (seconds on the default model), as regular expressions.
CHEAP = [r"fpa-gif( (ckpt|model)\.pt)?( --?[\w-]+( [\w.,-]+)?)*",
         r"fpa-sample ((ckpt|model)\.pt )?--n (\d{1,3}|1000) --outdir \S+",
         r"fpa-\w+( \w+)? (-h|--help)"]


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""
    path: Path
    line: int                 # 1-based line of the opening fence
    lang: str
    code: str
    not_run: Optional[str]    # the reason of a preceding <!-- not-run: … --> line

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def parse_blocks(path: Path, text: Optional[str] = None) -> list[Block]:
    """The fenced blocks of a markdown file, each with its language and not-run marker."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i].strip())
        if not match:
            i += 1
            continue
        start, fence = i, match.group(1)
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.search(previous)
        blocks.append(Block(path, start + 1, match.group(2).lower(), "\n".join(body) + "\n",
                            marker.group(1) if marker else None))
        i += 1
    return blocks


def inline_commands(path: Path, text: Optional[str] = None) -> list[tuple[int, str]]:
    """(line, text) of inline code spans outside fenced blocks that start with an `fpa-` command."""
    found, inside = [], False
    for number, line in enumerate((path.read_text(encoding="utf-8") if text is None else text).splitlines(), 1):
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            found += [(number, span) for span in re.findall(r"`(fpa-[a-z]+[^`]*)`", line)]
    return found


def _pending(block: Block) -> tuple[Optional[str], Optional[str]]:
    """(skip | xfail | None, reason) for a block: its not-run marker, else its PENDING entry."""
    if block.not_run:
        return "skip", block.not_run
    rel = block.path.relative_to(ROOT).as_posix()
    return next((entry for (file, text), entry in PENDING.items() if file == rel and text in block.code),
                (None, None))


ALL_BLOCKS = [block for path in DOC_FILES for block in parse_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("python", "py")]


@pytest.fixture
def doc_folder(tmp_path, monkeypatch):
    """A temporary working folder with the files snippets name."""
    from fpa_export.models import default_checkpoint_path

    for name in ("ckpt.pt", "model.pt"):
        shutil.copyfile(default_checkpoint_path(), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_python_block(block: Block) -> dict:
    """Execute a python block; an error becomes an AssertionError naming the file and line."""
    namespace = {"__name__": "__doc_snippet__"}
    namespace.update({name: factory() for name, factory in PROVIDED.items()
                      if re.search(rf"\b{name}\b", block.code)})
    try:
        exec(compile(block.code, block.where, "exec"), namespace)
    except Exception as err:  # noqa: BLE001 - any failure of a snippet is the finding
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        raise AssertionError(f"the python block at {block.where} fails: {detail}") from err
    return namespace


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.where for block in PYTHON_BLOCKS])
def test_python_block_runs(block, doc_folder, request):
    action, reason = _pending(block)
    if action == "skip":
        pytest.skip(f"{block.where}: not run: {reason}")
    if action == "xfail":
        request.applymarker(pytest.mark.xfail(reason=f"{block.where}: {reason}", strict=False))
    run_python_block(block)


def test_readme_api_images_can_be_viewed(doc_folder):
    """The README's API block, followed by what its comment tells a user to do next."""
    block = next(block for block in PYTHON_BLOCKS if block.path.name == "README.md" and "load_generator" in block.code)
    images = run_python_block(block)["images"]
    assert not images.requires_grad
    assert images.clamp(0, 1).numpy().shape[0] == 16


# ---------------------------------------------------------------------------------------------------
# Command lines


def _commands() -> dict[str, click.Command]:
    """`fpa-*` name (and `python -m` module) → click command, from the installed entry points."""
    from importlib import import_module
    from importlib.metadata import entry_points

    commands = {}
    for entry in entry_points(group="console_scripts"):
        if entry.name.startswith("fpa-") and entry.value.startswith("fpa_export."):
            module = entry.value.split(":")[0]
            commands[entry.name] = commands[module] = entry.load()
    for module in ("fpa_export.demo",):
        commands[module] = import_module(module).main
    return commands


# sub-commands click does not list: fpa-sample's `stats` (a first-argument dispatch) and the command
# `fpa-train` runs when none is named
EXTRA_SUBCOMMANDS = {"fpa-sample": ("stats", "fpa_export.cli.sample", "stats_command")}
DEFAULT_SUBCOMMAND = {"fpa-train": "fpa"}
OPTION = re.compile(r"(?<![\w\]/.$-])(--\[no-\][a-z0-9][\w-]*|--[a-z0-9][\w-]*|-[a-zA-Z])(?![\w])")


def logical_lines(code: str) -> list[tuple[int, str]]:
    """(offset, text) of shell lines: comments removed, backslash continuations joined."""
    out, pending, first = [], "", 0
    for offset, line in enumerate(code.splitlines()):
        line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if not pending:
            first = offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if (pending + line).strip():
            out.append((first, pending + line))
        pending = ""
    return out


def segments(line: str) -> list[str]:
    """Shell pipeline pieces: split at && || ; & and a pipe between spaces (not `image|steps`)."""
    return [part.strip() for part in re.split(r"\s(?:&&|\|\||&|\|)\s|\s&$|;", line) if part.strip()]


def _names_of(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names |= set(param.opts) | set(param.secondary_opts)
    return names


def _subcommand(name: str, command: click.Command, words: list[str]) -> tuple[click.Command, list[str]]:
    """The command that parses `words`, and the words left for it."""
    from importlib import import_module

    subs = dict(getattr(command, "commands", {}))
    if name in EXTRA_SUBCOMMANDS:
        sub, module, attribute = EXTRA_SUBCOMMANDS[name]
        subs[sub] = getattr(import_module(module), attribute)
    if not subs:
        return command, words
    first = words[0].replace("\\|", "|") if words else ""
    alternatives = first.split("|")
    if first and all(alt in subs for alt in alternatives):
        return subs[alternatives[0]], words[1:]
    if name in DEFAULT_SUBCOMMAND and not (words and words[0] in ("-h", "--help", "--version")):
        return subs[DEFAULT_SUBCOMMAND[name]], words
    return command, words


def find_command(words: list[str], commands: dict[str, click.Command]) -> tuple[Optional[str], int]:
    """(our command's name, its position) in a shell segment's words; (None, -1) if none of ours."""
    for i, word in enumerate(words):
        if word in commands and (word.startswith("fpa-") or (i > 0 and words[i - 1] == "-m")):
            # `python -m fpa_export.cli.gif` is fpa-gif
            return next(key for key, value in commands.items() if value is commands[word]
                        and (key.startswith("fpa-") or key == word)), i
    return None, -1


def check_command(text: str, commands: dict[str, click.Command]) -> list[str]:
    """Problems of one shell segment: options its `fpa-*` command does not have ([] if fine or not ours)."""
    words = text.split()
    name, i = find_command(words, commands)
    if name is None:
        return []
    command, rest = _subcommand(name, commands[name], words[i + 1:])
    known = _names_of(command) | ({"--version"} if command is commands[name] else set())
    problems = []
    for option in OPTION.findall(" ".join(rest)):
        spellings = ([option.replace("[no-]", ""), option.replace("[no-]", "no-")]
                     if "[no-]" in option else [option])
        label = name if command is commands[name] else f"{name} {command.name}"
        problems += [f"{label} has no option {spelling}" for spelling in spellings if spelling not in known]
    return problems


def command_lines() -> list[tuple[str, str]]:
    """(where, shell segment) of every command line in the docs."""
    found = []
    for block in ALL_BLOCKS:
        if block.lang in SHELL:
            rel = block.path.relative_to(ROOT).as_posix()
            found += [(f"{rel}:{block.line + 1 + offset}", segment) for offset, line in logical_lines(block.code)
                      for segment in segments(line)]
    for path in DOC_FILES:
        found += [(f"{path.relative_to(ROOT).as_posix()}:{number} (inline)", segment)
                  for number, span in inline_commands(path) for segment in segments(span)]
    return found


COMMAND_LINES = command_lines()


def help_example_lines(commands: dict[str, click.Command]) -> list[tuple[str, str]]:
    """(where, segment) of the example lines in every command's and sub-command's --help text."""
    found, seen = [], set()
    for name, command in commands.items():
        subs = list(getattr(command, "commands", {}).values())
        if name in EXTRA_SUBCOMMANDS:
            subs.append(_subcommand(name, command, [EXTRA_SUBCOMMANDS[name][0]])[0])
        for each in [command, *subs]:
            if id(each) in seen or not each.help:
                continue
            seen.add(id(each))
            label = name if each is command else f"{name} {each.name}"
            found += [(f"{label} --help", segment) for offset, line in logical_lines(each.help)
                      if re.match(r"\s*(fpa-|python -m |torchrun )", line) for segment in segments(line)]
    return found


def test_every_command_line_names_existing_options():
    commands = _commands()
    if not commands:
        pytest.skip("fpa-export is not installed (no entry points)")
    lines = COMMAND_LINES + help_example_lines(commands)
    problems = [f"{where}: {problem}   [{text}]" for where, text in lines
                for problem in check_command(text, commands)]
    assert not problems, "\n".join(problems)
    ours = [text for _, text in lines if find_command(text.split(), commands)[0]]
    assert len(ours) > 40, ours                         # the docs and --help texts were read


def test_make_targets_named_in_the_docs_exist():
    makefile = ROOT / "Makefile"
    if not makefile.is_file():
        pytest.skip("no Makefile beside the tests")
    targets = set(re.findall(r"^([\w-]+):", makefile.read_text(), flags=re.M))
    named = {(where, match) for where, text in COMMAND_LINES for match in re.findall(r"^make ([\w-]+)", text)}
    missing = [f"{where}: make {target}" for where, target in sorted(named) if target not in targets]
    assert named and not missing, missing


CHEAP_LINES = [(where, text) for where, text in COMMAND_LINES
               if any(re.fullmatch(pattern, text) for pattern in CHEAP)]


@pytest.mark.parametrize("where,text", CHEAP_LINES, ids=[where for where, _ in CHEAP_LINES])
def test_cheap_command_lines_run(where, text, doc_folder):
    from click.testing import CliRunner

    commands = _commands()
    name, *args = text.split()
    result = CliRunner().invoke(commands[name], args, prog_name=name)
    assert result.exit_code == 0, f"{where}: `{text}` exited {result.exit_code}: {result.output[-1500:]}"


# ---------------------------------------------------------------------------------------------------
# The checker itself: it must catch what it is for.


def test_checker_finds_blocks_markers_and_bad_options(tmp_path):
    text = ("Intro `fpa-gif --no-such-flag` here.\n\n<!-- not-run: takes hours -->\n```python\nx = 1\n```\n"
            "```bash\nfpa-export onnx ckpt.pt \\\n  --graph steps --fp16 --bogus && fpa-gif x.onnx --seeds 0-3\n"
            "torchrun --nproc-per-node 8 --no-python fpa-sample m.pt --n 5 --shard env  # --nope\n```\n"
            "```\nfpa-convert A -o B [--[no-]key-softmax] [--[no-]made-up]\n```\n")
    path = ROOT / "docs" / "_probe.md"           # parse_blocks takes the text; nothing is written
    blocks = parse_blocks(path, text)
    assert [(b.lang, b.not_run, b.line) for b in blocks] == [("python", "takes hours", 4), ("bash", None, 7),
                                                            ("", None, 12)]
    assert inline_commands(path, text) == [(1, "fpa-gif --no-such-flag")]
    commands = _commands()
    lines = [segment for line in logical_lines(blocks[1].code) for segment in segments(line[1])]
    assert len(lines) == 3 and lines[0].endswith("--bogus")
    assert check_command(lines[0], commands) == ["fpa-export onnx has no option --bogus"]
    assert check_command(lines[1], commands) == [] and check_command(lines[2], commands) == []
    assert check_command(blocks[2].code.strip(), commands) == ["fpa-convert has no option --made-up",
                                                               "fpa-convert has no option --no-made-up"]
    assert check_command("fpa-gif --no-such-flag", commands) == ["fpa-gif has no option --no-such-flag"]
    assert check_command("fpa-train --data mnist --out r --steps 3", commands) == []
    assert check_command("fpa-sample stats data -o s.npz --seeds 3", commands) == []
    assert check_command("python -m pytorch_fid real/ fake/ --whatever", commands) == []


def test_a_failing_snippet_names_its_file_and_line():
    block = Block(ROOT / "README.md", 42, "python", "import fpa_export\nfpa_export.no_such_thing()\n", None)
    with pytest.raises(AssertionError, match=r"README.md:42 fails: AttributeError"):
        run_python_block(block)


def dotted_names(path: Path, text: Optional[str] = None) -> list[tuple[int, str]]:
    """(line, name) of every `fpa_export.…` dotted name in the prose and code of a markdown file."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    found, in_key_table = [], False
    for number, line in enumerate(lines, 1):
        # A table of ONNX metadata keys (`fpa_export.record`, …) names keys of a file, not Python names.
        in_key_table = line.startswith("|") and (in_key_table or "metadata_props" in line)
        if not in_key_table:
            found += [(number, name) for name in re.findall(r"(?<![\w./-])fpa_export(?:\.[A-Za-z_]\w*)+", line)]
    return found


def resolve(name: str) -> bool:
    """Whether a dotted name is a module, or an attribute reached from the longest importable module."""
    from importlib import import_module

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_dotted_names_in_the_docs_resolve():
    """`fpa_export.convert.DEFAULTS` in a doc must be something a user can import or reach."""
    missing = [f"{path.relative_to(ROOT).as_posix()}:{number}: {name}" for path in DOC_FILES
               for number, name in dotted_names(path) if not resolve(name)]
    assert not missing, "\n".join(missing)
    assert resolve("fpa_export.painting.writers.write_animation") and not resolve("fpa_export.no_such")
    assert dotted_names(ROOT / "x.md", "see `fpa_export.fd.frechet` and fpa_export.load_generator()") == [
        (1, "fpa_export.fd.frechet"), (1, "fpa_export.load_generator")]


def test_metadata_key_tables_are_not_python_names():
    text = ("| `metadata_props` key | value |\n|---|---|\n| `fpa_export.record` | JSON |\n\n"
            "Use `fpa_export.load_generator` here.\n")
    assert dotted_names(Path("x.md"), text) == [(5, "fpa_export.load_generator")]

"""README.md's fenced ```python and ```bash blocks, and the one way a test fetches one.

A test claims a block by fetching it with literal arguments:

    code = readme_block("Flow control", "JOBS_RATE_LIMIT_AI=100/m").code

(the heading of its ``## `` section, or the start of it, and a piece of one of its lines). The call
raises unless exactly one block matches, so a block whose text changed fails the test that runs it
instead of going quietly unrun. ``tests/test_readme_blocks.py`` reads every such call in tests/
(statically) and fails for a block no test claims, unless the line right above the block is a
visible note saying why it is not run, in this form:

    _Not run by the tests: needs root and systemd as PID 1._

Bash helpers here run a block's commands the way a reader would paste them, after the named
substitutions only (each must be found, and no ``<placeholder>`` may be left over).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN_LANGUAGES = ("python", "py", "python3", "bash", "sh", "shell", "console")  # every runnable tag
NOTE = re.compile(r"^_.*not run by the tests: *[^_\s].*_$", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    language: str
    section: str   # the "## " heading the block sits under
    code: str
    line: int      # 1-based line of the opening fence in README.md
    note: str | None  # the "not run by the tests: <why>" line right above it, if any

    @property
    def first_line(self) -> str:
        return next((line for line in self.code.splitlines() if line.strip()), "")

    def __str__(self) -> str:
        return f"README.md:{self.line} ```{self.language} in '## {self.section}' starting {self.first_line!r}"


def parse(text: str) -> list[Block]:
    """Every fenced block (any language) with its section and the note above it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)\s*$", line)  # also indented (in a list) and ~~~
        if fence:
            end = index + 1
            while end < len(lines) and lines[end].strip() != fence.group(1):
                end += 1
            above = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            blocks.append(Block(fence.group(2).lower(), section, "\n".join(lines[index + 1:end]) + "\n", index + 1,
                                above if NOTE.match(above) else None))
            index = end
        index += 1
    return blocks


def readme_blocks(text: str | None = None) -> list[Block]:
    """The python and bash blocks of README.md (or of ``text``)."""
    return [b for b in parse(README.read_text() if text is None else text) if b.language in RUN_LANGUAGES]


def matching(blocks: list[Block], section: str, contains: str) -> list[Block]:
    return [b for b in blocks if b.section.startswith(section)
            and any(contains in line for line in b.code.splitlines())]


def readme_block(section: str, contains: str, text: str | None = None) -> Block:
    """The one python or bash block under ``## <section...>`` with a line containing ``contains``."""
    found = matching(readme_blocks(text), section, contains)
    if len(found) != 1:
        raise LookupError(f"README: {len(found)} blocks under '## {section}' have a line containing "
                          f"{contains!r} (exactly one expected): {[str(b) for b in found]}")
    return found[0]


def substitute(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each key replaced; every key must occur (``bash`` refuses a ``<placeholder>``)."""
    for old, new in replacements.items():
        assert old in code, f"the README block no longer contains {old!r}: update the test with it"
        code = code.replace(old, new)
    return code


def commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, blank and comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for line in code.splitlines():
        if pending:
            pending += "\n" + line
        elif line.strip() and not line.lstrip().startswith("#"):
            pending = line
        else:
            continue
        if not line.endswith("\\") and _quotes_closed(pending):
            out.append(pending)
            pending = ""
    assert not pending, f"unterminated command in the README block: {pending!r}"
    return out


def _quotes_closed(command: str) -> bool:
    """Single quotes balanced (a JSON body may span lines inside '...')."""
    return command.split("#", 1)[0].count("'") % 2 == 0 if "'" in command else True


def bash(command: str, env: dict[str, str], timeout: float = 120, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """One command through bash, as a reader would paste it, in the checkout."""
    left = re.findall(r"<[a-z_]+>", re.sub(r"(^|\s)#.*$", "", command, flags=re.M))  # comments may name them
    assert not left, f"placeholders left in the README command (substitute them): {left} in {command!r}"
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def shell_env(redis_url: str, **extra: str) -> dict[str, str]:
    """This environment with the test's Redis, the test task module and the given variables."""
    from tests.servers import worker_env

    env = worker_env(redis_url)
    env.update({k: v for k, v in os.environ.items() if k in ("DATABASE_URL", "JOBS_FALLBACK_SPOOL")})
    env.update(extra)
    return env

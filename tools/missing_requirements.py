#!/usr/bin/env python3
"""The lines of a lock file whose distribution is not installed yet: what `make setup` installs
when it keeps the torch of the Python the venv is built on.

    python tools/missing_requirements.py [--keep-torch] requirements.lock    # prints the lines to install
    python -m pip check | python tools/missing_requirements.py --keep-torch --conflicts requirements.lock

A lock line is ``name==version``; blank lines and ``#`` comments are skipped, anything else (ranges,
markers, URLs, ``-r`` / ``-e`` options, a name twice) is refused with the line number (exit 2). A
line is printed when no distribution of that name is installed, whatever its version, as the
running Python sees it through importlib.metadata (the venv, the user site and the system
site-packages alike); names compare per PEP 503 (case and runs of ``-`` ``_`` ``.`` alike). With
``--keep-torch`` the torch stack (torch, torchvision, torchaudio, triton, nvidia-*, cuda-*) is never
printed, installed or not: it belongs to that Python and is not to be replaced.

``--conflicts`` reads ``pip check`` output on stdin instead and prints the lock lines that would
mend it: a conflict whose required distribution is locked at another version than the one present
(a kept Python's antlr4 4.13 where omegaconf needs the locked 4.9.3). `make setup` prints them as the
fix; it does not install them itself.

Stdlib only: it runs in a venv before anything is installed into it.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata

LINE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[0-9][A-Za-z0-9.+!_-]*)$")
TORCH_STACK = {"torch", "torchvision", "torchaudio", "triton", "pytorch-triton"}
TORCH_PREFIXES = ("nvidia-", "cuda-")


class LockError(ValueError):
    pass


def normalize(name: str) -> str:
    """PEP 503: ``Typing.Extensions`` / ``typing_extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_torch_stack(name: str) -> bool:
    n = normalize(name)
    return n in TORCH_STACK or n.startswith(TORCH_PREFIXES)


def parse_lock(text: str, source: str = "lock") -> list[tuple[str, str]]:
    """[(normalized name, the line as written)] of a lock file's ``name==version`` lines."""
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        m = LINE.match(line)
        if not m:
            raise LockError(f"{source}:{number}: {raw.strip()!r} is not a pinned 'name==version' line")
        name = normalize(m["name"])
        if name in seen:
            raise LockError(f"{source}:{number}: {m['name']} is locked twice (first on line {seen[name]})")
        seen[name] = number
        out.append((name, line))
    return out


def installed() -> set[str]:
    """Normalized names of every distribution the running Python sees."""
    names = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            names.add(normalize(name))
    return names


def missing(lock: list[tuple[str, str]], have: set[str], keep_torch: bool) -> list[str]:
    return [line for name, line in lock if name not in have and not (keep_torch and is_torch_stack(name))]


CONFLICT = re.compile(r"^\S+ \S+ has requirement (?P<req>[A-Za-z0-9][A-Za-z0-9._-]*).*, but you have "
                      r"(?P<name>\S+) (?P<have>\S+?)\.?$")


def mending(lock: list[tuple[str, str]], pip_check: str, keep_torch: bool) -> list[str]:
    """Lock lines of the distributions ``pip check`` says conflict, where the lock pins another version."""
    pinned = {name: line for name, line in lock}
    out: list[str] = []
    for raw in pip_check.splitlines():
        m = CONFLICT.match(raw.strip())
        if not m:
            continue
        name = normalize(m["req"])
        line = pinned.get(name)
        if line and line.split("==", 1)[1] != m["have"] and not (keep_torch and is_torch_stack(name)) and line not in out:
            out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lock", help="a lock file of name==version lines (requirements.lock)")
    ap.add_argument("--keep-torch", action="store_true",
                    help="never print torch, torchvision, torchaudio, triton, nvidia-*, cuda-*")
    ap.add_argument("--conflicts", action="store_true",
                    help="read `pip check` output on stdin; print the lock lines that would mend its conflicts")
    a = ap.parse_args(argv)
    try:
        with open(a.lock, encoding="utf-8") as f:
            text = f.read()
        lock = parse_lock(text, a.lock)
    except OSError as e:
        print(f"error: cannot read {a.lock}: {e.strerror}\n  fix: pass the path of requirements.lock", file=sys.stderr)
        return 2
    except (LockError, UnicodeDecodeError) as e:
        print(f"error: {e}\n  fix: write each line as name==version (as `pip freeze` does); "
              "comments start with #", file=sys.stderr)
        return 2
    lines = mending(lock, sys.stdin.read(), a.keep_torch) if a.conflicts else missing(lock, installed(), a.keep_torch)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run every command of README.md as written, from the repository root, after `make demo`.

    make demo && .venv/bin/python scripts/readme_commands.py

Reads the README's ```bash and ```python blocks in order, joins continued lines, and runs each
command with bash (python blocks with the virtual environment's python). `make` lines are
skipped (`make demo` is the precondition; `make test` is CI's job), and so are the walk-through's
bare `crsrisk ...` steps: `scripts/walkthrough.py`, itself a README command, runs them in its
own folder. `crsrisk serve` is started
in the background and stopped after the block's other commands ran against it. A command
passes when it exits 0 or 1 (1: some rows rejected or values blanked, as documented) and prints
no traceback; the script prints each command with its exit code and the end of its output, and
exits 1 when any command failed.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^[ \t]*```(bash|python)[ \t]*$\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
# The walk-through's steps run inside the folder scripts/walkthrough.py makes (it runs them).
WALKTHROUGH_STEP = "crsrisk "
SERVE_PORT = re.compile(r"--port\s+(\d+)")


def blocks(readme: Path) -> list[tuple[str, str]]:
    """The README's runnable blocks, in order, as (language, text)."""
    return [(m.group(1), textwrap.dedent(m.group(2)))
            for m in FENCE.finditer(readme.read_text("utf-8"))]


def commands(text: str) -> list[str]:
    """One shell command per logical line: continuations joined, comments and make dropped."""
    out: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        command = line.split("  #")[0].strip()
        if command and not command.startswith(("#", "make ", WALKTHROUGH_STEP)):
            out.append(command)
    return out


def wait_for_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


def run(command: str, timeout: float) -> tuple[int, str]:
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def report(command: str, code: int, output: str) -> bool:
    ok = code in (0, 1) and "Traceback (most recent call last)" not in output
    print(f"\n$ {command}\n[exit {code}] {'ok' if ok else 'FAILED'}")
    tail = output.strip().splitlines()[-6:]
    print("\n".join(f"    {line}" for line in tail))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per command")
    args = parser.parse_args()
    python = str(ROOT / ".venv" / "bin" / "python")
    failed: list[str] = []
    for language, text in blocks(args.readme):
        if language == "python":
            ok = report("python <<README block>>", *run(f"{python} - <<'EOF'\n{text}EOF",
                                                         args.timeout))
            failed += [] if ok else [text.splitlines()[0]]
            continue
        server = None
        for command in commands(text):
            if " serve " in f" {command} ":
                found = SERVE_PORT.search(command)
                port = int(found.group(1)) if found else 5000
                server = subprocess.Popen(["bash", "-c", command], cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                up = wait_for_port(port, 180)
                print(f"\n$ {command} &\n[{'listening' if up else 'FAILED to listen'} on "
                      f"127.0.0.1:{port}]")
                if not up:
                    failed.append(command)
                continue
            if not report(command, *run(command, args.timeout)):
                failed.append(command)
        if server is not None:
            server.terminate()
            server.wait(30)
    print(f"\n{len(failed)} README command(s) failed" + "".join(f"\n  {c}" for c in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The `limen` command scripts/install writes: Python started without `site` at first.

Every `limen ssh NODE` pays for the interpreter's start-up before it can become ssh, and
issue 17 allows the whole command 10% over a bare ssh (about 14 ms of 140 here). Of the
interpreter's 10 ms, `site` takes 2 to 3: it lists site-packages, runs the .pth files
there (setuptools' shim among them) and imports what they name. The hand-over from the
memo (client/openssh_fast.py) needs none of that: it imports limen's own modules, with os
and time. Measured end to end (bench/ssh.py --cli-only times pip's script beside this
one), `limen ssh NODE true` gains 1 to 3 ms, about as much as the machine's noise.

So the script this module writes starts Python with -S and puts the directory Limen was
installed in on sys.path. run() lets the hand-over try first. Only when the command goes
on in Python does it run site.main(), the documented way to add later what -S left out
(site-packages, .pth files, sitecustomize), before anything else is imported.

pip's console script (pyproject's [project.scripts]) stays the way in wherever Limen is
installed by pip alone; scripts/install puts this one in its place in the checkout's
.venv, every time it runs (pip writes its own again on each install).

One trace of -S stays: sys.flags.no_site is 1, and subprocess hands that flag on to
children started with the interpreter's flags (multiprocessing's spawn), which would then
start without site. Limen starts none: its Python children (`limen proxy tls` as ssh's
ProxyCommand) are `python -m limen.cli.main`, with no flags of this process.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: this module runs before site, on every command
if TYPE_CHECKING:
    from collections.abc import Sequence

SCRIPT = """\
#!{python} -S
# Limen's `limen` command, written by `python -m limen.cli.launcher` (scripts/install):
# -S spares `limen ssh` the site module until it is needed (see limen/cli/launcher.py).
import sys
sys.path.append({package_parent!r})
from limen.cli.launcher import run
sys.exit(run())
"""
# Kernels before Linux 5.1 read 128 bytes of a "#!" line (BINPRM_BUF_SIZE; 256 since):
# a longer line would run some other, truncated path, so the launcher stays under both.
SHEBANG_LIMIT = 127


def run() -> int:
    """The command, as pip's script would run it, with `site` only when it is needed."""
    from limen.cli import main as cli

    cli.become_ssh_if_remembered()
    if sys.flags.no_site:
        import site

        site.main()
    return cli.run_command()


def script(python: str, package_parent: str) -> str:
    """The launcher's text, or ValueError when a "#!" line cannot name ``python``."""
    if any(c.isspace() for c in python) or len(f"#!{python} -S") > SHEBANG_LIMIT:
        raise ValueError(f"a #! line cannot run {python!r} (spaces, or over "
                         f"{SHEBANG_LIMIT} characters)")
    return SCRIPT.format(python=python, package_parent=package_parent)


def install(path: str, python: str = sys.executable) -> None:
    """Write the launcher at ``path`` in one step (a rename), executable by all."""
    import limen

    # limen/__init__.py's grandparent: site-packages, or src/ for an editable install.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(limen.__file__)))
    text = script(python, package_parent)
    partial = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.new")
    try:
        with open(partial, "w", encoding="utf-8") as out:  # Python reads source as UTF-8
            out.write(text)
        os.chmod(partial, 0o755)
        os.replace(partial, path)
    except OSError:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m limen.cli.launcher PATH`: write the launcher at PATH."""
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) != 1:
        print("usage: python -m limen.cli.launcher PATH", file=sys.stderr)
        return 2
    try:
        install(words[0])
    except (ValueError, OSError) as exc:
        print(f"ERROR: the launcher was not written ({exc}); {words[0]} is as it was",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `limen` command scripts/install writes: a POSIX shell front, then Python without
`site` at first.

Every `limen ssh NODE` pays for the interpreter's start-up before it can become ssh, and
issue 17 allows the whole command 10% over a bare ssh. Once the jump handshake lost its
two 40 ms waits (limen/sshpackets.py), a bare `ssh NODE true` through the proxy took
about 50 ms here, and `python -S -c pass` alone takes 6 to 7: no Python front could
meet the figure. So the command is a shell script (launcher.sh, about 1 ms of dash) that
reads the memo of the last hand-over itself for the common shape, `limen ssh
[LOGIN@]NODE [COMMAND...]`, checks the files it names and the clock with one `stat`, and
becomes ssh: 2.6 ms in all before ssh starts, where Python took 8. It says yes only to
what the Python reader (client/openssh_fast.py) would say yes to, with the same
arguments; anything else goes to Python, the words unchanged.
tests/cli/test_launcher_sh.py holds the two readers to that.

Python then starts with -S and puts the directory Limen was installed in on sys.path;
-P keeps the current directory off it (-c would put it first). run() lets the Python
hand-over try first. Only when the command goes on in Python does it run site.main(),
the documented way to add later what -S left out (site-packages, .pth files,
sitecustomize), before anything else is imported: `site` costs 2 to 3 ms that the
hand-over does not need.

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

TEMPLATE = "launcher.sh"


def run() -> int:
    """The command, as pip's script would run it, with `site` only when it is needed."""
    from limen.cli import main as cli

    cli.become_ssh_if_remembered()
    if sys.flags.no_site:
        import site

        site.main()
    return cli.run_command()


def script(python: str, package_parent: str) -> str:
    """The launcher's text: launcher.sh with this installation's values filled in."""
    import shlex

    from limen import __version__
    from limen.client.openssh_fast import MEMO_FORMAT

    with open(os.path.join(os.path.dirname(__file__), TEMPLATE), encoding="utf-8") as fh:
        text = fh.read()
    values = {"@PYTHON@": python, "@PACKAGE_PARENT@": package_parent,
              "@MEMO_FORMAT@": f"{MEMO_FORMAT} {__version__}"}
    for name, value in values.items():
        text = text.replace(name, shlex.quote(value))
    return text


def install(path: str, python: str = sys.executable) -> None:
    """Write the launcher at ``path`` in one step (a rename), executable by all."""
    import limen

    # limen/__init__.py's grandparent: site-packages, or src/ for an editable install.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(limen.__file__)))
    text = script(python, package_parent)
    partial = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.new")
    try:
        # A path that is not UTF-8 is written back as the bytes it was.
        with open(partial, "w", encoding="utf-8", errors="surrogateescape") as out:
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
    except OSError as exc:
        print(f"ERROR: the launcher was not written ({exc}); {words[0]} is as it was",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `limen` command scripts/install writes (cli/launcher.py): a shell front that
becomes ssh from the memo without Python (tests/cli/test_launcher_sh.py holds it to the
Python reader), then Python without `site`: `limen ssh` hands over to OpenSSH before site
is imported, and every other command gets site-packages back first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from limen import __version__
from limen.cli import launcher as launcher_module
from tests.support.importtime import imported_modules
from tests.support.memo_home import Home

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    path = tmp_path / "limen"
    done = subprocess.run([sys.executable, "-m", "limen.cli.launcher", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


def _run(*argv: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin", **env})


def test_the_launcher_is_an_executable_shell_script(launcher: Path) -> None:
    assert launcher.stat().st_mode & 0o777 == 0o755
    assert launcher.read_text().splitlines()[0] == "#!/bin/sh"
    assert _run(launcher, "--version").stdout == f"limen {__version__}\n"


def test_the_plain_shape_becomes_ssh_without_python(home: Home, launcher: Path) -> None:
    expected = home.full_path("root@web1", "true")  # pip's way in; it leaves the memo
    done = home.run("root@web1", "true", limen=[str(launcher)], PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    assert imported_modules(done.stderr) == []


def test_other_hand_overs_come_before_site_with_the_same_words(
        home: Home, launcher: Path) -> None:
    expected = home.full_path("-t", "root@web1", "true")
    done = home.run("-t", "root@web1", "true", limen=[str(launcher)],
                    PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    modules = imported_modules(done.stderr)
    assert "limen.client.openssh_fast" in modules
    assert "site" not in modules
    assert "site" in imported_modules(home.run("root@web1", "true").stderr)  # pip's way


def test_without_a_memo_the_launcher_runs_the_full_path(home: Home, launcher: Path) -> None:
    expected = home.full_path("root@web1", "true")
    assert home.full_path("root@web1", "true", limen=[str(launcher)],
                          PYTHONPROFILEIMPORTTIME="1") == expected
    assert home.memo.exists()


def test_other_commands_get_site_packages_back_before_they_import(launcher: Path) -> None:
    """`limen get` imports yaml, which only site-packages holds."""
    done = _run(launcher, "get", "--help", PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0 and done.stdout.startswith("usage: limen get"), done.stderr
    modules = imported_modules(done.stderr)
    assert modules.index("site") < modules.index("yaml")


def test_a_launcher_that_cannot_be_written_leaves_a_sentence_and_nothing_else(
        tmp_path: Path) -> None:
    done = _run(sys.executable, "-m", "limen.cli.launcher", tmp_path / "missing" / "limen")
    assert done.returncode == 1
    assert done.stderr.startswith("ERROR: the launcher was not written")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
    assert _run(sys.executable, "-m", "limen.cli.launcher").returncode == 2


def test_the_checkouts_limen_command_is_the_launcher() -> None:
    """scripts/install, which scripts/test runs first, puts it in place of pip's."""
    installed = Path(sys.executable).with_name("limen")
    assert installed.read_text() == launcher_module.script(
        sys.executable, str(Path(launcher_module.__file__).parents[2]))

"""`limen ssh NODE` from a memo of its last hand-over to OpenSSH: a millisecond of Python.

The full path (cli/ssh.py with client/openssh_exec.py) checks what it can explain before
it becomes OpenSSH's ssh: it parses the options with argparse, reads the profile (JSON)
and the certificate, and writes the config. Here that is about 20 ms of imports and work
on top of the interpreter's 9, for a whole `ssh NODE true` of about 150 ms: issue 17
allows `limen ssh` 10% over a bare ssh.

So after each hand-over the full path leaves a memo beside the profile: what its checks
found (the cluster, the login the config was written for, the certificate's validity,
principals and extensions) and the identity (inode, size, mtime) of every file they read
or wrote. The next `limen ssh` reads that memo with nothing but os and time. When every
file is still the one the memo names, the options are ones this module knows, and the
clock, the login and the options pass the same checks, it becomes ssh with the arguments
the full path would give. Anything else (a changed file, an option it does not know, a
refusal to explain, a label selector, the asyncssh client asked for) leaves the decision
to the full path, which explains refusals in words and writes a new memo.

The memo is the user's own file, like the certificate it summarises: it saves time and
grants nothing; the proxy and the node verify the certificate.

Imports: os and time only (both loaded by the interpreter already). re, pathlib, json
and argparse each cost `limen ssh` milliseconds here; see tests/cli/test_startup.py.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # not typing's: importing typing costs `limen ssh` ~4 ms
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import NoReturn

CLIENT_ENV = "LIMEN_SSH_CLIENT"  # "native": always the asyncssh client
MEMO_NAME = "openssh_handover"
MEMO_FORMAT = "limen-openssh-handover/1"

# Flags and valued options both paths know; any other word starting with "-" (-tt,
# -lroot, --, --help) goes to the full path, which parses it with argparse.
_FLAGS = ("-t", "-T", "-A", "-N")
# Node names and logins the fast path passes on; anything else goes through the full path.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


# What both paths share: finding ssh, its arguments, becoming it


def openssh_binary(environ: Mapping[str, str] | None = None) -> str | None:
    """The ssh to hand over to, or None for the asyncssh client."""
    environ = os.environ if environ is None else environ
    if environ.get(CLIENT_ENV, "").strip().lower() == "native":
        return None
    return _which("ssh", environ)


def _which(name: str, environ: Mapping[str, str]) -> str | None:
    """shutil.which's POSIX search, without shutil's imports (bz2, lzma, fnmatch)."""
    path = environ.get("PATH")
    if path is None:
        try:
            path = os.confstr("CS_PATH")
        except (AttributeError, ValueError):
            path = os.defpath
    if not path:  # PATH="" finds nothing; PATH=":" looks in the current directory
        return None
    seen: set[str] = set()
    for directory in path.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        if (os.path.exists(candidate) and os.access(candidate, os.F_OK | os.X_OK)
                and not os.path.isdir(candidate)):
            return candidate
    return None


def destination(node: str, cluster: str) -> tuple[str, str]:
    """(the name ssh's config matches, the name the proxy and the host certificate know).

    The config applies to ``*.CLUSTER``; a node's certificate names its id, its name and
    NAME.CLUSTER, so a bare name or id is given as HostName with CLUSTER appended for
    the match.
    """
    suffix = f".{cluster}"
    if node.lower().endswith(suffix.lower()):
        return node, node
    return node + suffix, node


def ssh_argv(binary: str, config: str, *, host: str, host_name: str, login: str,
             tty: int, no_tty: bool, forwards: list[str], agent: bool, no_command: bool,
             command: list[str], verbose: bool = False) -> list[str]:
    argv = [binary, "-F", config, "-l", login] + ["-v"] * verbose
    if host_name != host:
        argv += ["-o", f"HostName={host_name}"]
    argv += ["-t"] * tty + ["-T"] * no_tty + ["-A"] * agent + ["-N"] * no_command
    for spec in forwards:
        argv += ["-L", spec]
    return [*argv, "--", host, *command]


def hand_over(argv: list[str]) -> NoReturn:
    """Become ssh: its exit status, signals and terminal handling are then ssh's own."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def local_user(environ: Mapping[str, str] | None = None) -> str:
    """getpass.getuser(), without importing getpass: the environment, then the password
    database; "" when neither knows."""
    environ = os.environ if environ is None else environ
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if user := environ.get(name):
            return user
    import pwd

    try:
        return pwd.getpwuid(os.getuid())[0]
    except KeyError:
        return ""


def default_login(allowed: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """The local user name when it is allowed (ssh's default), else the first login."""
    local = local_user(environ)
    return local if local in allowed or not allowed else allowed[0]


# The memo, written by the full path


def file_identity(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns}"


def memo_text(*, version: str, home: str, proxy: str, cluster: str, login: str,
              config: str, valid: tuple[int, int], principals: Sequence[str],
              extensions: Sequence[str], files: Sequence[str]) -> str | None:
    """The memo of one hand-over; None when a value cannot be written on one line."""
    lines = [f"format {MEMO_FORMAT} {version}", f"home {home}", f"proxy {proxy}",
             f"cluster {cluster}", f"login {login}", f"config {config}",
             f"valid {valid[0]} {valid[1]}"]
    lines += [f"principal {p}" for p in principals]
    lines += [f"extension {e}" for e in sorted(extensions)]
    for path in files:
        identity = file_identity(path)
        if identity is None:
            return None
        lines.append(f"file {identity} {path}")
    if any("\n" in line or "\r" in line for line in lines):
        return None
    return "\n".join(lines) + "\n"


# The fast path


class _Request:
    """The words after `limen ssh`, when the fast path knows every one of them."""

    __slots__ = ("target", "login", "tty", "no_tty", "agent", "no_command", "forwards",
                 "command")

    def __init__(self) -> None:
        self.target: str | None = None
        self.login: str | None = None
        self.tty = 0
        self.no_tty = self.agent = self.no_command = False
        self.forwards: list[str] = []
        self.command: list[str] = []


def parse_words(words: Sequence[str]) -> _Request | None:
    """Options, [LOGIN@]NODE, more options, then the command (as ssh reads them); None
    for anything argparse should judge."""
    request, at = _Request(), 0
    while at < len(words):
        word = words[at]
        if word in ("--", "-") or (request.target is not None and not word.startswith("-")):
            break
        if word in _FLAGS:
            _set_flag(request, word)
        elif word in ("-l", "-L"):
            at += 1
            if at == len(words) or words[at].startswith("-"):
                return None
            if word == "-l":
                request.login = words[at]
            else:
                request.forwards.append(words[at])
        elif word.startswith("-"):
            return None
        else:
            request.target = word
        at += 1
    if request.target is None or (at < len(words) and words[at] in ("--", "-")):
        return None
    request.command = list(words[at:])
    return request


def _set_flag(request: _Request, flag: str) -> None:
    if flag == "-t":
        request.tty += 1
    elif flag == "-T":
        request.no_tty = True
    elif flag == "-A":
        request.agent = True
    else:
        request.no_command = True


class _Memo:
    __slots__ = ("fields", "principals", "extensions", "files")

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.principals: list[str] = []
        self.extensions: set[str] = set()
        self.files: list[tuple[str, str]] = []  # (identity, path)


def read_memo(text: str) -> _Memo | None:
    memo = _Memo()
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "principal":
            memo.principals.append(value)
        elif key == "extension":
            memo.extensions.add(value)
        elif key == "file":
            ino, size, mtime, path = (value.split(" ", 3) + ["", "", "", ""])[:4]
            memo.files.append((f"{ino} {size} {mtime}", path))
        else:
            memo.fields[key] = value
    needed = ("format", "home", "proxy", "cluster", "login", "config", "valid")
    return memo if all(memo.fields.get(k) for k in needed) and memo.files else None


def home_dir(environ: Mapping[str, str]) -> str | None:
    """$LIMEN_HOME, else ~/.limen, spelled as pathlib spells it in the memo; None when
    relative. Like pathlib, and unlike os.path.normpath, it keeps "..": through a
    symbolic link, "link/.." is not the link's directory."""
    home = environ.get("LIMEN_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".limen")
    if not home.startswith("/") or home.startswith("//"):
        return None
    return "/" + "/".join(part for part in home.split("/") if part not in ("", "."))


def proxy_dirname(proxy: str) -> str:
    """The directory of a proxy's keys under $LIMEN_HOME/keys (client/profile.py)."""
    return "".join(c if c in _PLAIN else "_" for c in proxy)


def _recall(environ: Mapping[str, str], version: str) -> _Memo | None:
    home = home_dir(environ)
    if home is None:
        return None
    try:
        with open(os.path.join(home, "current-profile")) as marker:
            proxy = marker.read().strip()
        with open(os.path.join(home, "keys", proxy_dirname(proxy), MEMO_NAME)) as fh:
            memo = read_memo(fh.read())
    except (OSError, UnicodeDecodeError):
        return None
    if memo is None or memo.fields["format"] != f"{MEMO_FORMAT} {version}":
        return None
    if (memo.fields["home"], memo.fields["proxy"]) != (home, proxy):
        return None
    if any(file_identity(path) != identity for identity, path in memo.files):
        return None
    return memo


def planned_argv(words: Sequence[str], environ: Mapping[str, str], now: float,
                 version: str) -> list[str] | None:
    """ssh's argv when the memo answers every check the full path would make; else None."""
    request = parse_words(words)
    if request is None or (binary := openssh_binary(environ)) is None:
        return None
    target = request.target or ""
    wanted_login, _, node = target.rpartition("@")
    if not set(target) <= _PLAIN | {"@"} or "@" in wanted_login or not node:
        return None
    memo = _recall(environ, version)
    if memo is None or not _passes(memo, request, wanted_login, environ, now):
        return None
    host, host_name = destination(node, memo.fields["cluster"])
    return ssh_argv(
        binary, memo.fields["config"], host=host, host_name=host_name,
        login=memo.fields["login"], tty=request.tty, no_tty=request.no_tty,
        forwards=request.forwards, agent=request.agent, no_command=request.no_command,
        command=request.command,
    )


def _passes(memo: _Memo, request: _Request, target_login: str, environ: Mapping[str, str],
            now: float) -> bool:
    """The full path's checks, answered from the memo: any doubt is a no."""
    try:
        valid_after, valid_before = (int(v) for v in memo.fields["valid"].split(" "))
    except ValueError:
        return False
    if not valid_after <= now < valid_before:
        return False
    allowed = memo.principals
    login = request.login or target_login or default_login(allowed, environ)
    if login != memo.fields["login"] or login not in allowed:
        return False
    if request.forwards and "permit-port-forwarding" not in memo.extensions:
        return False
    return not request.agent or (bool(environ.get("SSH_AUTH_SOCK"))
                                 and "permit-agent-forwarding" in memo.extensions)


def hand_over_if_remembered(words: Sequence[str], version: str) -> None:
    """Become ssh when the memo allows it; return when the full path must decide."""
    argv = planned_argv(words, os.environ, time.time(), version)
    if argv is not None:
        hand_over(argv)

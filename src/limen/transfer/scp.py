"""Legacy scp (``scp -O``): the client runs ``scp -t PATH`` (upload) or ``scp -f PATH``
(download) on the node and speaks the scp protocol over its stdin and stdout.

A command is taken for scp only when it cannot be anything else: the scp program,
followed only by scp's server-mode flags and exactly one path, in words a POSIX shell
would take literally (quotes and backslashes allowed; no variables, globs, command
substitution, redirections or command separators). The node then runs the real scp
binary itself, by its absolute path, as the login user: no shell in between, so
nothing else can run, and the transfer is followed from its protocol (scp_stream.py).
Everything else is an ordinary command, run by the user's shell and recorded in full.

``mentions_file_copy`` is the opposite, looser question, asked only to refuse: does a
command look like it starts an scp server or sftp-server at all?
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

SERVER_FLAGS = frozenset("dfprtv")  # what an scp client sends: -d -f -p -r -t -v
_PLAIN = re.compile(r"[A-Za-z0-9_./,:@%+=-]")
_SERVER_FLAG_WORD = re.compile(r"-[dfprtv]*[tf][dfprtv]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ScpRequest:
    action: str  # "upload" (scp -t: the user sends) or "download" (scp -f)
    path: str  # the operand, with a leading ~ made the home directory
    flags: str  # the server-mode flags, in the order given
    recursive: bool

    @property
    def target_must_be_directory(self) -> bool:
        return "d" in self.flags

    def argv(self, program: str) -> tuple[str, ...]:
        return (program, *(f"-{flag}" for flag in self.flags), "--", self.path)


def literal_words(command: str, home: str) -> list[str] | None:
    """The words of ``command`` if a POSIX shell would take every character literally
    (a leading ``~`` or ``~/`` is the home directory), else None."""
    words: list[str] = []
    word: list[str] | None = None
    i, end = 0, len(command)
    while i < end:
        char = command[i]
        if char in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        if word is None:
            word = []
            if char == "~" and (i + 1 == end or command[i + 1] in " \t/"):
                word.append(home)
                i += 1
                continue
        taken = _literal_piece(command, i)
        if taken is None:
            return None
        text, i = taken
        word.append(text)
    if word is not None:
        words.append("".join(word))
    if any(_CONTROL.search(w) for w in words):
        return None
    return words


def _literal_piece(command: str, i: int) -> tuple[str, int] | None:
    """One literal piece at ``i``: a plain character, a backslash escape, or a quoted
    string; None when the shell would interpret it."""
    char = command[i]
    if _PLAIN.match(char):
        return char, i + 1
    if char == "\\" and i + 1 < len(command) and command[i + 1] != "\n":
        return command[i + 1], i + 2
    if char == "'":
        close = command.find("'", i + 1)
        return (command[i + 1:close], close + 1) if close > i else None
    if char == '"':
        close = command.find('"', i + 1)
        inner = command[i + 1:close]
        if close < 0 or any(c in inner for c in "$`\\!"):
            return None
        return inner, close + 1
    return None


def parse_scp_command(command: str, home: str, program: str) -> ScpRequest | None:
    """The scp server this command asks for, when it can be nothing else (see above)."""
    words = literal_words(command, home)
    if not words or words[0] not in ("scp", program):
        return None
    flags, rest = "", words[1:]
    while rest and rest[0].startswith("-") and rest[0] != "--":
        letters = rest.pop(0)[1:]
        if not letters or not set(letters) <= SERVER_FLAGS:
            return None
        flags += letters
    if rest and rest[0] == "--":
        rest.pop(0)
    if len(rest) != 1 or not rest[0] or ("t" in flags) == ("f" in flags):
        return None
    action = "upload" if "t" in flags else "download"
    return ScpRequest(action, rest[0], flags, "r" in flags)


def mentions_file_copy(command: str, sftp_server: str) -> bool:
    """Whether a command looks like it starts sftp-server, or scp in server mode, in any
    of its simple commands. Used only to refuse (deny wins), so it may say yes too often."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: judge the raw words
        tokens = command.split()
    simple: list[str] = []
    for token in [*tokens, ";"]:
        if token and all(c in "();<>|&" for c in token):
            if _starts_file_copy(simple, sftp_server):
                return True
            simple = []
        else:
            simple.append(token)
    return False


def _starts_file_copy(words: list[str], sftp_server: str) -> bool:
    for index, word in enumerate(words):
        name = posixpath.basename(word)
        if name == "sftp-server" or word == sftp_server:
            return True
        if name == "scp" and any(_SERVER_FLAG_WORD.fullmatch(w) for w in words[index + 1:]):
            return True
    return False

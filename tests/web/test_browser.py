"""The web UI in a real browser (Debian's Chromium through Playwright), as people use it.

A new user signs up from the invite link ``limen users add`` printed, signs in, finds
the node, opens a terminal, runs a command (UTF-8 both ways), resizes the window,
pastes and copies; an auditor in a second browser sees the session on the sessions
page; the tab closes and the session ends; the auditor finds ``session.start`` (from the
web) on the audit page and replays the recording. An editor manages users, roles (with
the CLI's field-and-line messages), join tokens and locks. A screenshot of each page is
saved under each test's output folder, and no page breaks its Content-Security-Policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from limen import totp
from tests.support.cluster import PASSWORD, ClusterHarness, LimenUser
from tests.support.ssh_access import unique, wait_until

TIMEOUT_MS = 45_000  # a shell on a busy machine can be slow to show its prompt
expect.set_options(timeout=TIMEOUT_MS)
UTF8_LINE = "héllo wörld ✓"


@dataclass
class Person:
    """One person's browser context and page, with what the page complained about."""

    context: BrowserContext
    page: Page
    shots: Path
    problems: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, chromium: Any, cluster: ClusterHarness, shots: Path) -> Person:
        context = chromium.new_context(
            base_url=f"https://{cluster.web_addr}", ignore_https_errors=True,
            viewport={"width": 1100, "height": 700},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        person = cls(context, page, shots)
        page.on("console", lambda m: person._console(m.type, m.text))
        page.on("pageerror", lambda e: person.problems.append(f"page error: {e}"))
        return person

    def _console(self, kind: str, text: str) -> None:
        # A form answered with 400 (a mistake the page explains) is logged as a failed
        # load; that is the page working. Scripts' errors and policy violations are not.
        if "Content Security Policy" in text or (
                kind == "error" and not text.startswith("Failed to load resource")):
            self.problems.append(text)

    def shot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sign_in(self, cluster: ClusterHarness, user: LimenUser) -> None:
        """The sign-in form by keyboard alone: Tab between fields, Enter to send."""
        self.page.goto("/web/login")
        self.page.get_by_label("Username").fill(user.name)
        self.page.keyboard.press("Tab")
        self.page.keyboard.type(PASSWORD)
        self.page.keyboard.press("Tab")
        self.page.keyboard.type(cluster.next_otp(user))
        self.page.keyboard.press("Enter")
        self.page.wait_for_url("**/web/nodes")

    def terminal_text(self) -> str:
        return self.page.locator("#terminal .xterm-rows").inner_text()

    def run(self, command: str, expect_text: str, *, as_text_input: bool = False) -> None:
        """Type ``command`` and Enter. ``as_text_input``: the command arrives as one input
        event, as an input method or the OS's character picker delivers text. Typed one
        character at a time, the non-ASCII ones (each its own input event in Chromium)
        raced xterm.js's reading of its textarea under load, and came out garbled."""
        if as_text_input:
            self.page.keyboard.insert_text(command)
            self.page.keyboard.press("Enter")
        else:
            self.page.keyboard.type(command + "\n")
        expect(self.page.locator("#terminal .xterm-rows")).to_contain_text(expect_text)

    def close(self) -> None:
        self.context.close()


def _invite_link(cluster: ClusterHarness, name: str, roles: str) -> str:
    added = cluster.admin("users", "add", name, "--roles", roles, "--logins", "root")
    assert added.returncode == 0, added.stderr
    link = re.search(r"https://\S+/web/invite/[0-9a-f]+", added.stdout)
    assert link, added.stdout
    return link.group(0)


def _sign_up(person: Person, cluster: ClusterHarness, link: str, name: str) -> LimenUser:
    page = person.page
    page.goto(link)
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    person.shot("invite")
    page.get_by_text("Cannot scan? Type this key instead").click()
    secret = page.get_by_label("Authenticator key").inner_text().strip()
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_label("Authenticator code").fill(totp.code_at(secret, cluster.clock.now()))
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/web/login?**")
    expect(page.get_by_role("status")).to_contain_text("Your account is ready")
    expect(page.get_by_label("Username")).to_have_value(name)
    person.shot("login")
    return LimenUser(name, secret, cluster.base, last_step=cluster.current_step())


def _stty_size(person: Person) -> tuple[int, int]:
    marker = unique("size")
    person.page.keyboard.type(f"echo {marker} $(stty size) end\n")
    found = wait_until(
        lambda: re.search(rf"{marker} (\d+) (\d+) end", person.terminal_text()), 10,
        "the output of stty size")
    return int(found.group(1)), int(found.group(2))


def test_a_new_user_signs_up_opens_a_terminal_and_an_auditor_replays_it(
        chromium: Any, cluster: ClusterHarness, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    name = unique("webalice")
    link = _invite_link(cluster, name, "access")
    alice = Person.open(chromium, cluster, shots)
    alice.context.grant_permissions(["clipboard-read", "clipboard-write"])
    user = _sign_up(alice, cluster, link, name)
    alice.sign_in(cluster, user)
    page = alice.page

    # Nodes: the row, the search box and the label filter.
    row = page.get_by_role("row", name=re.compile(r"node1"))
    expect(row.get_by_role("button", name="Connect")).to_be_visible()
    alice.shot("nodes")
    page.get_by_label("Search nodes").fill("no-such-node")
    expect(row).to_be_hidden()
    page.get_by_label("Search nodes").fill("node")
    expect(row).to_be_visible()
    # Other tests share this cluster and may add env=prod nodes: what must hold is
    # that node1 (env=dev) is filtered out and the count says a filter is on.
    page.goto("/web/nodes?label=env%3Dprod")
    expect(page.get_by_text(re.compile(r"^\d+ of \d+ nodes?$"))).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(r"node1"))).to_have_count(0)
    page.goto("/web/nodes?label=env%3Ddev")

    # A terminal: a command, UTF-8 both ways, a resize, paste and copy.
    page.get_by_role("row", name=re.compile(r"node1")).get_by_role("button",
                                                                  name="Connect").click()
    expect(page.get_by_role("status")).to_contain_text("Connected to node1 as root")
    alice.run(f"echo '{UTF8_LINE}' $((6*7))", f"{UTF8_LINE} 42", as_text_input=True)
    # 24-bit colour: xterm.js styles such a cell itself, which the policy must not block.
    alice.run(r"printf '\e[38;2;255;100;0m%s\e[0m\n' TRUE$((1))COLOR", "TRUE1COLOR")
    coloured = page.locator("#terminal .xterm-rows span", has_text="TRUE1COLOR").last
    assert coloured.evaluate("(e) => getComputedStyle(e).color") == "rgb(255, 100, 0)"
    before = _stty_size(alice)
    page.set_viewport_size({"width": 1400, "height": 900})
    wait_until(lambda: _stty_size(alice) != before, 10, "the terminal to take the new size")
    page.locator("#terminal textarea").evaluate(
        """(area) => { const data = new DataTransfer();
                       data.setData('text/plain', 'echo pasted-$((2+3))');
                       area.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data,
                                                                     bubbles: true})); }""")
    page.keyboard.press("Enter")  # bash takes a paste as typed text (bracketed paste)
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("pasted-5")
    # Select the word as a person does (a double click on it), then copy.
    word = page.locator("#terminal .xterm-rows").get_by_text("pasted-5").last.bounding_box()
    assert word is not None
    page.mouse.dblclick(word["x"] + 4, word["y"] + word["height"] / 2)
    page.keyboard.press("Control+Shift+C")
    assert wait_until(lambda: page.evaluate("navigator.clipboard.readText()"), 5,
                      "the copied text") in ("pasted-5", "pasted")
    alice.shot("terminal")

    start = wait_until(lambda: cluster.events_of("session.start", user=name), 10,
                       "session.start")[0]
    assert start["origin"] == "web" and start["interactive"] is True

    # An auditor, in a browser of their own, sees the live session.
    auditor_user = cluster.create_user(unique("webaudit"), "access,auditor", "root")
    auditor = Person.open(chromium, cluster, shots)
    auditor.sign_in(cluster, auditor_user)
    auditor.page.get_by_role("link", name="Sessions").click()
    live = auditor.page.get_by_role("row", name=re.compile(name))
    expect(live).to_contain_text("node1")
    expect(live.get_by_role("button", name="Join")).to_be_visible()
    auditor.shot("sessions")

    # Closing the tab ends the session.
    alice.close()
    wait_until(lambda: cluster.events_of("session.end", user=name), 10, "session.end")

    # The audit page finds the session's start, from the web, and links to its recording.
    audit = auditor.page
    audit.get_by_role("link", name="Audit").click()
    audit.get_by_label("Event type").select_option("session.start")
    audit.get_by_label("User").fill(name)
    audit.get_by_role("button", name="Search").click()
    event = audit.get_by_role("row", name=re.compile("session.start"))
    expect(event).to_have_count(1)
    event.locator("summary").click()
    expect(event.locator("pre")).to_contain_text('"origin": "web"')
    auditor.shot("audit")

    event.get_by_role("link", name="recording").click()
    audit.wait_for_url("**/web/recordings/*")
    expect(audit.locator("#player[data-loaded=true]")).to_have_count(1)
    audit.get_by_label("Speed").select_option("8")
    audit.get_by_role("button", name="Play").click()
    expect(audit.locator("#player .xterm-rows")).to_contain_text(f"{UTF8_LINE} 42")
    audit.get_by_label("Find text in this recording").fill("pasted-5")
    audit.get_by_role("button", name="Find").click()
    match = audit.locator("#matches button").first
    expect(match).to_contain_text("pasted-5")
    match.click()
    expect(audit.get_by_role("button", name="Play")).to_be_visible()  # paused at the match
    auditor.shot("player")

    audit.get_by_role("link", name="Recordings").click()
    audit.get_by_label("Text printed in the session").fill("pasted-5")
    audit.get_by_role("button", name="Search recordings").click()
    expect(audit.get_by_role("row", name=re.compile(name))).to_have_count(1)
    auditor.shot("recordings")

    assert not alice.problems and not auditor.problems, alice.problems + auditor.problems
    auditor.close()


def test_an_editor_manages_users_roles_tokens_and_locks(
        chromium: Any, cluster: ClusterHarness, tmp_path: Path) -> None:
    editor_user = cluster.create_user(unique("webeditor"), "access,editor", "root")
    editor = Person.open(chromium, cluster, tmp_path / "screenshots")
    editor.sign_in(cluster, editor_user)
    page = editor.page

    # Users: add one, and get the link to send them.
    newcomer = unique("newcomer")
    page.get_by_role("link", name="Users").click()
    page.get_by_text("Add a user").click()
    page.get_by_label("Name", exact=True).fill(newcomer)
    page.get_by_label("Logins").fill("root")
    page.get_by_role("button", name="Add user").click()
    expect(page.locator("#invite-link")).to_contain_text("/web/invite/")
    expect(page.get_by_role("row", name=re.compile(newcomer))).to_contain_text("pending signup")
    editor.shot("users")

    # Roles: a mistake is named by field and line, as the CLI names it; nothing is saved.
    role = unique("webrole")
    page.get_by_role("link", name="Roles").click()
    page.get_by_text("Create or replace roles from YAML").click()
    page.get_by_label(re.compile("Role YAML")).fill(
        f"kind: role\nversion: v7\nmetadata:\n  name: {role}\nspec:\n  allow:\n"
        "    logins: [root]\n    node_lables: {env: dev}\n")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "the role YAML: field 'spec.allow.node_lables' (line 8): unknown field")
    editor.shot("roles-error")
    expect(page.get_by_role("row", name=re.compile(role))).to_have_count(0)
    page.get_by_label(re.compile("Role YAML")).fill(
        f"kind: role\nversion: v7\nmetadata:\n  name: {role}\nspec:\n  allow:\n"
        "    logins: [root]\n    node_labels: {env: dev}\n")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text(f"role {role} saved")
    expect(page.get_by_role("row", name=re.compile(role))).to_have_count(1)
    editor.shot("roles")

    # Join tokens: the command a new node runs.
    page.get_by_role("link", name="Tokens").click()
    page.get_by_text("Add a join token for nodes").click()
    page.get_by_label("Labels").fill("env=staging")
    page.get_by_role("button", name="Add token").click()
    expect(page.locator("#join-command")).to_contain_text("limen start --roles node --token")
    editor.shot("tokens")

    # Locks: lock the newcomer, then lift it.
    page.get_by_role("link", name="Locks").click()
    page.get_by_text("Add a lock", exact=True).click()
    page.get_by_label("Named").fill(newcomer)
    page.get_by_label("Message").fill("web test")
    page.get_by_role("button", name="Lock", exact=True).click()
    lock_row = page.get_by_role("row", name=re.compile(f"user={newcomer}"))
    expect(lock_row).to_contain_text("web test")
    editor.shot("locks")
    page.once("dialog", lambda dialog: dialog.accept())
    lock_row.get_by_role("button", name="Unlock").click()
    expect(page.get_by_role("status")).to_contain_text("removed")
    expect(page.get_by_role("row", name=re.compile(f"user={newcomer}"))).to_have_count(0)

    assert not editor.problems, editor.problems
    editor.close()


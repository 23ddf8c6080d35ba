"""The sessions page offers Join only with the modes the visitor's roles allow (the node
decides again when they join: test_session_join.py)."""

from __future__ import annotations

import re

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import unique, wait_until
from tests.web.support import Browser


def test_the_join_chooser_lists_only_the_modes_roles_allow(cluster: ClusterHarness) -> None:
    owner = cluster.create_user(unique("webmodeowner"), "access", "root")
    watcher = cluster.create_user(unique("webmodewatch"), "access,auditor", "root")
    outsider = cluster.create_user(unique("webmodeout"), "access", "root")
    browsers = [Browser(cluster) for _ in range(3)]
    try:
        owned, watching, outside = browsers
        owned.sign_in(owner)
        terminal = owned.terminal("node1", "root")
        terminal.read_until(lambda t: t.ready, 20, "the owner's terminal")
        sid = wait_until(lambda: cluster.events_of("session.start", user=owner.name), 10,
                         "session.start")[0]["sid"]

        watching.sign_in(watcher)
        page = watching.page("/web/sessions").text
        row = re.search(rf'name="join" value="{sid}".*?</form>', page, re.S)
        assert row is not None
        offered = re.findall(r"<option>(observer|peer|moderator)</option>", row.group(0))
        assert offered == ["observer", "moderator"]  # the auditor role: no peer

        outside.sign_in(outsider)  # no join_sessions: the session is not shown at all
        assert sid not in outside.page("/web/sessions").text
    finally:
        for browser in browsers:
            browser.close()

"""Signing in with a directory password: OpenLDAP's slapd, started by the tests."""

from __future__ import annotations

import json

from tests.sso.conftest import LDAPSetup
from tests.sso.slapd import PASSWORDS


def test_group_membership_maps_to_roles(ldap: LDAPSetup) -> None:
    cluster = ldap.sso.cluster
    home = cluster.new_home()
    result = ldap.login(home, "corp", "alice", PASSWORDS["alice"], "--format", "json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["user"] == "alice"
    assert status["roles"] == ["access"]
    assert status["logins"] == ["alice"]  # the uid attribute, as the logins trait
    success = cluster.events_of("user.login", code="T1000I", user="alice", method="ldap")[-1]
    assert success["connector"] == "corp"
    assert success["claims"] == {"groups": ["ops"]}
    user = json.loads(cluster.admin("get", "user/alice", "--format", "json").stdout)
    assert user["spec"]["kind"] == "sso"
    assert user["spec"]["sso"]["subject"] == "uid=alice,ou=people,dc=example,dc=com"
    listed = cluster.admin("users", "ls")
    assert any(line.split()[:2] == ["alice", "access"] and "sso (corp)" in line
               for line in listed.stdout.splitlines()), listed.stdout
    # Next time `limen login` alone signs in the same way (the profile remembers it).
    again = ldap.sso.cluster.cli("login", "--password-stdin", home=home,
                                 input=PASSWORDS["alice"] + "\n")
    assert again.returncode == 0, again.stderr


def test_a_name_typed_in_capitals_is_the_same_user(ldap: LDAPSetup) -> None:
    home = ldap.sso.cluster.new_home()
    result = ldap.login(home, "corp", "ALICE", PASSWORDS["alice"], "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user"] == "alice"
    listed = ldap.sso.cluster.admin("users", "ls", "--format", "json").json()
    assert "ALICE" not in [u["metadata"]["name"] for u in listed]


def test_a_regex_mapping_and_starttls(ldap: LDAPSetup) -> None:
    home = ldap.sso.cluster.new_home()
    result = ldap.login(home, "corp-starttls", "erin", PASSWORDS["erin"], "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["roles"] == ["access"]


def test_a_user_in_no_mapped_group_is_refused(ldap: LDAPSetup) -> None:
    cluster = ldap.sso.cluster
    result = ldap.login(cluster.new_home(), "corp", "bob", PASSWORDS["bob"])
    assert result.returncode == 1
    assert "does not map bob to any Limen role" in result.stderr
    refused = cluster.events_of("user.login", code="T1000W", user="bob", method="ldap")[-1]
    assert refused["claims"] == {"groups": ["marketing"]}


def test_a_wrong_password_is_refused_and_counts_toward_the_lockout(ldap: LDAPSetup) -> None:
    cluster = ldap.sso.cluster
    home = cluster.new_home()
    for attempt in range(5):
        wrong = ldap.login(home, "corp", "dave", "not-daves-password")
        assert wrong.returncode == 1
        expected = ("locked until" if attempt == 4
                    else "invalid user name, password or second factor")
        assert expected in wrong.stderr, wrong.stderr
    reasons = [e["error"] for e in cluster.events_of("user.login", user="dave", code="T1000W")]
    assert reasons.count("wrong directory password") == 5
    # Locked: even the right password is refused, without asking the directory.
    right = ldap.login(home, "corp", "dave", PASSWORDS["dave"])
    assert right.returncode == 1
    assert "locked until" in right.stderr
    assert cluster.admin("users", "unlock", "dave").returncode == 0
    after = ldap.login(home, "corp", "dave", PASSWORDS["dave"], "--format", "json")
    assert after.returncode == 0, after.stderr
    assert sorted(json.loads(after.stdout)["roles"]) == ["access", "auditor"]


def test_a_directory_whose_certificate_does_not_verify_is_refused(ldap: LDAPSetup) -> None:
    cluster = ldap.sso.cluster
    before = len(cluster.events_of("cert.create"))
    # bob has no user record yet, so no connector owns the name: the TLS check is reached.
    other_ca = ldap.login(cluster.new_home(), "corp-wrong-ca", "bob", PASSWORDS["bob"])
    assert other_ca.returncode == 1
    assert "TLS certificate does not verify" in other_ca.stderr
    wrong_name = ldap.login(cluster.new_home(), "corp-wrong-name", "bob", PASSWORDS["bob"])
    assert wrong_name.returncode == 1
    assert "certificate is for another host name" in wrong_name.stderr
    assert len(cluster.events_of("cert.create")) == before
    assert cluster.events_of("user.login", code="T1000W", connector="corp-wrong-ca")


def test_names_that_are_filters_are_refused_before_the_directory(ldap: LDAPSetup) -> None:
    for name in ("*", "alice)(uid=*", "*)(|(uid=*"):
        result = ldap.login(ldap.sso.cluster.new_home(), "corp", name, "x")
        assert result.returncode == 1
        assert "is not valid" in result.stderr


def test_a_connector_may_ask_for_the_local_totp_code_too(ldap: LDAPSetup) -> None:
    cluster = ldap.sso.cluster
    home = cluster.new_home()
    first = ldap.login(home, "corp-totp", "frank", PASSWORDS["frank"], "--otp", "123456")
    assert first.returncode == 1
    assert "frank has no device enrolled" in first.stderr
    assert "limen users reset frank" in first.stderr

    issued = cluster.admin("users", "reset", "frank", "--format", "json")
    assert issued.returncode == 0, issued.stderr
    signup = cluster.try_signup(issued.json()["token"], home)
    assert signup.returncode == 0, signup.stderr
    assert "--auth corp-totp" in signup.stdout  # an SSO user sets no local password
    secret = (home / "totp.secret").read_text().strip()

    wrong_code = "000000" if cluster.otp(secret) != "000000" else "111111"
    refused = ldap.login(home, "corp-totp", "frank", PASSWORDS["frank"], "--otp", wrong_code)
    assert refused.returncode == 1
    assert cluster.events_of("user.login", user="frank", error="wrong TOTP code",
                             connector="corp-totp")
    ok = ldap.login(home, "corp-totp", "frank", PASSWORDS["frank"], "--otp",
                    cluster.otp(secret), "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["roles"] == ["access"]
    # Still no local password: the directory's is the only one.
    local = cluster.cli("login", "--proxy", cluster.web_addr, "--user", "frank",
                        "--password-stdin", "--otp", cluster.otp(secret), home=home,
                        input=PASSWORDS["frank"] + "\n")
    assert local.returncode == 1
    assert "signs in through single sign-on" in local.stderr

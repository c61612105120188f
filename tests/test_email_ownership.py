"""Who owns an email address: a proof (an email code) wins over an unproven claim, by either route.

The routes are ``complete-registration`` with ``email`` (and ``emailCode``)
and ``verify-otp-email``; both go through ``logins.claim_email``. The races
run threads against a threaded server on PostgreSQL.
"""

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa

from allmine_auth.extensions import db
from allmine_auth.models import User
from allmine_auth.rules import profiles
from allmine_auth.store import logins as stored_logins
from tests.conftest import assert_envelope, assert_error, bearer
from tests.parallel import threaded_server

URL = "/api/v1/auth/complete-registration"
VERIFY_EMAIL = "/api/v1/auth/verify-otp-email"
CONFLICT = "Resource already exists or cannot be changed in its current state"
ADDRESS = "owner@example.net"
SECOND_ADDRESS = "second@example.net"
THIRD_ADDRESS = "third@example.net"
# Fixed codes (nothing is sent), so that several requests can prove one address at the same moment.
FIXED_CODE = "1234"
RACE_ROUNDS = 4
RACE_ADDRESSES = [f"race{n}@example.net" for n in range(3 * RACE_ROUNDS)]
TIMEOUT = 30
PROFILE = {
    "name": "Ada",
    "surname": "Yılmaz",
    "privacyPolicyAccepted": True,
    "privacyPolicyVersion": "1.2.0",
    "termsOfUseAccepted": True,
    "termsOfUseVersion": "1.1.0",
}
needs_postgresql = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"),
    reason="races and concurrent writers are tested on PostgreSQL (TEST_DATABASE_URL)",
)
needs_redis = pytest.mark.skipif(
    not os.environ.get("TEST_REDIS_URL"), reason="the profile cache needs TEST_REDIS_URL"
)


@pytest.fixture
def config_overrides():
    return {
        "OTP_RESEND_INTERVAL": 0,
        "OTP_TEST_DESTINATIONS": {
            address: (FIXED_CODE, None)
            for address in [ADDRESS, SECOND_ADDRESS, THIRD_ADDRESS, *RACE_ADDRESSES]
        },
    }


@pytest.fixture
def people(auth, unique_phone):
    """Log in new people by phone: ``people(n)`` returns n logins, each with a username of its own."""
    counter = iter(range(1000))

    def log_in(count):
        logins = [auth.login(unique_phone()) for _ in range(count)]
        for login in logins:
            login["username"] = f"person{next(counter)}"
        return logins

    return log_in


def claim(client, login, address, code=None):
    """complete-registration with ``address`` (proven when ``code`` is given) for ``login``'s account."""
    body = {**PROFILE, "username": login["username"], "email": address}
    if code is not None:
        body["emailCode"] = code
    return client.post(URL, json=body, headers=bearer(login["accessToken"]))


def email_login(client, address):
    """verify-otp-email with the address's fixed code."""
    return client.post(VERIFY_EMAIL, json={"email": address, "code": FIXED_CODE})


def me(client, login):
    return assert_envelope(client.get("/api/v1/auth/me", headers=bearer(login["accessToken"])), 200)


def row(login):
    """The account's row as committed now."""
    db.session.rollback()
    return db.session.get(User, uuid.UUID(login["user"]["id"]), populate_existing=True)


def holders(address):
    """``(id, email_verified)`` of every account holding ``address``, as committed now."""
    db.session.rollback()
    return db.session.execute(sa.select(User.id, User.email_verified).where(User.email == address)).all()


def count_users():
    return db.session.scalar(sa.select(sa.func.count()).select_from(User))


def test_a_proof_wins_over_an_unproven_claim_by_either_route(client, people):
    claimant, owner, latecomer, stranger = people(4)
    # complete-registration: an unproven claim, then a proof.
    claimed = assert_envelope(claim(client, claimant, ADDRESS), 200)
    assert (claimed["email"], claimed["isEmailVerified"]) == (ADDRESS, False)
    assert me(client, claimant)["email"] == ADDRESS  # with Redis, this fills the cached profile
    # Without a proof, nobody takes an address someone holds, and the refused claim changes nothing.
    assert_error(claim(client, stranger, ADDRESS), 409, CONFLICT)
    refused = row(stranger)
    assert (refused.email, refused.username, refused.is_registration_complete) == (None, None, False)
    proven = assert_envelope(claim(client, owner, ADDRESS, FIXED_CODE), 200)
    assert (proven["id"], proven["email"], proven["isEmailVerified"]) == (owner["user"]["id"], ADDRESS, True)
    assert (row(claimant).email, row(claimant).email_verified) == (None, False)
    assert (me(client, claimant)["email"], me(client, claimant)["isEmailVerified"]) == (None, False)
    # A proof against an address proven before is a 409 and changes nothing.
    assert_error(claim(client, latecomer, ADDRESS, FIXED_CODE), 409, CONFLICT)
    assert_error(claim(client, claimant, ADDRESS), 409, CONFLICT)
    assert row(latecomer).email is None
    # An email login finds the account that proved the address: no third account.
    users = count_users()
    assert assert_envelope(email_login(client, ADDRESS), 200)["user"]["id"] == owner["user"]["id"]
    assert count_users() == users
    assert holders(ADDRESS) == [(uuid.UUID(owner["user"]["id"]), True)]

    # verify-otp-email: a proof by login makes a new account that takes the address.
    assert_envelope(claim(client, claimant, SECOND_ADDRESS), 200)
    login = assert_envelope(email_login(client, SECOND_ADDRESS), 200)
    assert login["user"]["id"] not in (claimant["user"]["id"], owner["user"]["id"])
    assert (login["user"]["email"], login["user"]["isEmailVerified"]) == (SECOND_ADDRESS, True)
    assert me(client, claimant)["email"] is None
    assert_error(claim(client, claimant, SECOND_ADDRESS, FIXED_CODE), 409, CONFLICT)
    # Its owner may prove it again on their own account; the next login is the same account.
    assert_envelope(claim(client, {**login, "username": "the.owner"}, SECOND_ADDRESS, FIXED_CODE), 200)
    assert assert_envelope(email_login(client, SECOND_ADDRESS), 200)["user"]["id"] == login["user"]["id"]
    assert holders(SECOND_ADDRESS) == [(uuid.UUID(login["user"]["id"]), True)]

    # Proving an address one holds unproven verifies it, and it then logs in to that account.
    assert_envelope(claim(client, stranger, THIRD_ADDRESS), 200)
    again = assert_envelope(claim(client, stranger, THIRD_ADDRESS, FIXED_CODE), 200)
    assert (again["email"], again["isEmailVerified"]) == (THIRD_ADDRESS, True)
    assert assert_envelope(email_login(client, THIRD_ADDRESS), 200)["user"]["id"] == stranger["user"]["id"]


@needs_redis
def test_the_losers_cached_profile_is_marked_stale(app, client, people):
    claimant, owner = people(2)
    assert_envelope(claim(client, claimant, ADDRESS), 200)
    key = profiles.PROFILE_CACHE_PREFIX + claimant["user"]["id"]
    redis_client = app.extensions["allmine_redis"]
    redis_client.delete(key)
    assert me(client, claimant)["email"] == ADDRESS
    assert redis_client.get(key) not in (None, profiles.STALE)
    assert_envelope(claim(client, owner, ADDRESS, FIXED_CODE), 200)
    assert redis_client.get(key) == profiles.STALE
    assert me(client, claimant)["email"] is None


@pytest.fixture
def live_url(app):
    """``app`` served by a threaded server (its database is PostgreSQL)."""
    with threaded_server(app) as base_url:
        yield base_url


def at_once(*sends):
    """Run each of ``sends`` in a thread of its own, released together; return ``(status, body)`` each."""
    barrier = threading.Barrier(len(sends), timeout=TIMEOUT)

    def fire(send):
        barrier.wait()
        with send() as response:
            return response.status_code, response.json()

    with ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(fire, sends))


def claim_over_http(base_url, login, address, code=None):
    """A ``claim`` to be sent from a thread."""
    body = {**PROFILE, "username": login["username"], "email": address}
    if code is not None:
        body["emailCode"] = code
    headers = bearer(login["accessToken"])
    return lambda: requests.post(f"{base_url}{URL}", json=body, headers=headers, timeout=TIMEOUT)


def email_login_over_http(base_url, address):
    """An ``email_login`` to be sent from a thread."""
    body = {"email": address, "code": FIXED_CODE}
    return lambda: requests.post(f"{base_url}{VERIFY_EMAIL}", json=body, timeout=TIMEOUT)


@needs_postgresql
def test_races_on_one_address_leave_one_proven_owner_and_no_500(client, people, live_url):
    # A's unproven claim, B's proof by complete-registration and C's email login, at once. Every order
    # is possible; each must leave one proven owner, whom C's login found (or made).
    for address in RACE_ADDRESSES[:RACE_ROUNDS]:
        claimant, prover = people(2)
        (a_status, a_body), (b_status, b_body), (c_status, c_body) = at_once(
            claim_over_http(live_url, claimant, address),
            claim_over_http(live_url, prover, address, FIXED_CODE),
            email_login_over_http(live_url, address),
        )
        assert a_status in (200, 409) and b_status in (200, 409), (a_body, b_body)
        assert c_status == 200, c_body
        ((holder_id, verified),) = holders(address)
        assert verified is True
        assert str(holder_id) == c_body["data"]["user"]["id"]
        if b_status == 200:
            assert str(holder_id) == prover["user"]["id"]
        else:
            # The login came first and made the owner's account; a proof against it is a 409.
            assert b_body["errors"] == [CONFLICT]
            assert str(holder_id) not in (prover["user"]["id"], claimant["user"]["id"])
        if a_status == 409:
            assert a_body["errors"] == [CONFLICT]
        assert row(claimant).email is None and me(client, claimant)["email"] is None

    # An address held unproven: a proof racing unproven claims (the holder's own repeat among them) wins.
    for address in RACE_ADDRESSES[RACE_ROUNDS : 2 * RACE_ROUNDS]:
        holder, prover, claimant = people(3)
        assert_envelope(claim(client, holder, address), 200)
        (b_status, b_body), (a_status, a_body), (h_status, _) = at_once(
            claim_over_http(live_url, prover, address, FIXED_CODE),
            claim_over_http(live_url, claimant, address),
            claim_over_http(live_url, holder, address),
        )
        assert b_status == 200, b_body
        assert (b_body["data"]["email"], b_body["data"]["isEmailVerified"]) == (address, True)
        assert (a_status, a_body["errors"]) == (409, [CONFLICT])
        # The holder's repeat is a 200 (it still held the address) or a 409 (the proof came first).
        assert h_status in (200, 409)
        assert holders(address) == [(uuid.UUID(prover["user"]["id"]), True)]
        assert me(client, holder)["email"] is None

    # A free address: an unproven claim and a proof at once. Whichever writes first, the proof ends up
    # with the address (never a 409 from the unique constraint because the claim got there first).
    for address in RACE_ADDRESSES[2 * RACE_ROUNDS :]:
        claimant, prover = people(2)
        (a_status, a_body), (b_status, b_body) = at_once(
            claim_over_http(live_url, claimant, address),
            claim_over_http(live_url, prover, address, FIXED_CODE),
        )
        assert b_status == 200, b_body
        assert a_status in (200, 409), a_body
        assert holders(address) == [(uuid.UUID(prover["user"]["id"]), True)]
        assert me(client, claimant)["email"] is None


@needs_postgresql
def test_a_unique_violation_at_login_is_a_409_and_the_code_still_works(client, auth, monkeypatch):
    code = assert_envelope(auth.send(), 201)["code"]
    found = stored_logins.phone_login_with_code
    taken = []

    def another_account_takes_the_id(code, account, *args):
        # Another transaction commits a row with the new account's id just before its INSERT: a unique
        # violation the phone's ``ON CONFLICT`` does not cover.
        with db.engine.begin() as connection:
            connection.execute(sa.insert(User).values(id=account["user_id"], phone_e164="+12015550199"))
        taken.append(account["user_id"])
        return found(code, account, *args)

    monkeypatch.setattr(stored_logins, "phone_login_with_code", another_account_takes_the_id)
    assert_error(auth.verify(code), 409, CONFLICT)
    monkeypatch.setattr(stored_logins, "phone_login_with_code", found)
    login = assert_envelope(auth.verify(code), 200)
    others = {str(user_id) for user_id in taken}
    assert count_users() == 2 and login["user"]["id"] not in others
    assert login["user"]["phoneNumber"] == "5321234567"


def test_a_first_phone_login_that_another_committed_first_logs_in_to_that_account(client, auth, monkeypatch):
    code = assert_envelope(auth.send(), 201)["code"]
    found = stored_logins.phone_login_with_code
    made = uuid.uuid4()

    def another_login_commits_first(code, *args):
        # Another transaction creates the account just before this login's statement (or, on SQLite, its
        # code's use and its upsert).
        _, phone_e164, *_ = code
        with db.engine.begin() as connection:
            connection.execute(sa.insert(User).values(id=made, phone_e164=phone_e164, signup_source="first"))
        return found(code, *args)

    monkeypatch.setattr(stored_logins, "phone_login_with_code", another_login_commits_first)
    login = assert_envelope(auth.verify(code, signupSource="second"), 200)
    assert count_users() == 1 and login["user"]["id"] == str(made)
    assert db.session.scalar(sa.select(User.signup_source)) == "first"

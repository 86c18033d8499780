"""Login abuse bounded (issue 10, item 6): lockouts that double, per user and per user-from-an-address,
and a password check queue where one user's flood never holds up another user's login."""
import asyncio
import collections
import threading

import grpc
import pytest

from strife.core import passwords
from strife.deployment import credentials, tls
from strife.deployment.topology import load_deployment
from strife.nodes.gateway.login_limits import LoginLimiter
from strife.nodes.gateway.users import TooManyAttempts, Users, limit_keys, source_address
from strife.rpc import cl_gw_pb2 as cl, cl_gw_pb2_grpc
from tests.helpers import wait_for


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def limiter(clock, **kw):
    return LoginLimiter(**dict(dict(lock_after=3, first_lockout=1.0, max_lockout=8.0, forget_after=60.0,
                                    clock=clock), **kw))


# --- the limiter, on a fake clock ---------------------------------------------------------------

def test_a_few_failures_are_free_then_the_key_is_locked_for_a_doubling_time_up_to_a_cap():
    clock = Clock()
    limits = limiter(clock)
    assert [limits.failed("alice") for _ in range(2)] == [0, 0]
    waits = []
    for _ in range(6):
        waits.append(limits.failed("alice"))
        assert limits.wait("alice") == waits[-1]
        clock.now += waits[-1]  # the lockout passes; the next failure comes just then
        assert limits.wait("alice") == 0
    assert waits == [1, 2, 4, 8, 8, 8]


def test_a_success_resets_the_count_and_other_keys_are_never_affected():
    clock = Clock()
    limits = limiter(clock)
    for _ in range(3):
        limits.failed("alice")
    assert limits.wait("alice") == 1 and limits.wait("bob") == 0
    clock.now += 1
    limits.succeeded("alice")
    assert [limits.failed("alice") for _ in range(3)] == [0, 0, 1]  # counted from zero again


def test_the_wait_for_several_keys_is_the_longest():
    clock = Clock()
    limits = limiter(clock)
    for _ in range(4):
        limits.failed("user", "address")
        clock.now += 1
    limits.succeeded("user")
    assert limits.wait("user") == 0 and limits.wait("address") == 1
    assert limits.wait("user", "address") == 1


def test_old_failures_are_forgotten_and_the_table_stays_bounded():
    clock = Clock()
    limits = limiter(clock, max_keys=100)
    limits.failed("alice")
    limits.failed("alice")
    clock.now += 61
    assert limits.failed("alice") == 0  # the two old failures were forgotten: this is the first
    for i in range(1000):
        limits.failed(f"k{i}")
    assert len(limits._keys) <= 100


def test_a_huge_number_of_failures_stays_at_the_cap():
    clock = Clock()
    limits = limiter(clock, lock_after=1)
    for _ in range(5000):
        assert limits.failed("alice") <= 8.0
        clock.now += 8


# --- what counts as a peer --------------------------------------------------------------------

@pytest.mark.parametrize("peer, address", [
    ("ipv4:127.0.0.1:50123", "127.0.0.1"), ("ipv6:[::1]:50123", "[::1]"),
    ("unix:/tmp/x.sock", "unix:/tmp/x.sock"), (None, "-"), ("", "-"),
])
def test_the_source_address_is_the_peer_without_its_port(peer, address):
    assert source_address(peer) == address


def test_two_connections_from_one_address_count_against_the_same_keys_but_two_users_do_not():
    assert limit_keys("alice", "ipv4:127.0.0.1:1") == limit_keys("alice", "ipv4:127.0.0.1:2")
    assert not set(limit_keys("alice", "ipv4:127.0.0.1:1")) & set(limit_keys("bob", "ipv4:127.0.0.1:1"))


# --- Users.check: limiter, cache and scheduler together, with real scrypt -----------------------

User = collections.namedtuple("User", "name salt hash")


class Store:
    def __init__(self, **users):
        self.users = {}
        for name, password in users.items():
            salt, digest = passwords.hash_password(password)
            self.users[name] = User(name, salt, digest)

    def user(self, name):
        return self.users.get(name)


@pytest.fixture
def scrypt_runs(monkeypatch):
    """How many times the real scrypt check ran."""
    runs = []
    real = passwords.verify

    def counted(*args):
        runs.append(1)
        return real(*args)
    monkeypatch.setattr(passwords, "verify", counted)
    return runs


def users_with(clock, **kw):
    return Users(Store(alice="alice-password", bob="bob-password"), limiter=limiter(clock, **kw))


def test_a_locked_out_user_gets_a_retry_hint_and_costs_no_scrypt(scrypt_runs):
    clock = Clock()

    async def main():
        users = users_with(clock)
        assert [await users.check("alice", f"wrong-{i}", "ipv4:10.0.0.9:1") for i in range(3)] == [False] * 3
        with pytest.raises(TooManyAttempts, match=r"too many failed logins for alice; try again in 1s"):
            await users.check("alice", "alice-password", "ipv4:10.0.0.9:1")  # even the right one
        assert len(scrypt_runs) == 3
        clock.now += 1
        assert await users.check("alice", "alice-password", "ipv4:10.0.0.9:2")  # the lockout has passed
        assert await users.check("alice", "wrong", "ipv4:10.0.0.9:2") is False  # and the count restarted
        users.close()

    asyncio.run(main())


def test_the_user_from_another_address_is_locked_while_the_real_user_logs_in_elsewhere(scrypt_runs):
    clock = Clock()

    async def main():
        users = users_with(clock)
        for i in range(3):  # the attacker at 10.0.0.9 and the real user at 10.0.0.1 take turns
            assert await users.check("alice", f"guess-{i}", "ipv4:10.0.0.9:1") is False
            assert await users.check("alice", "alice-password", "ipv4:10.0.0.1:1")  # resets the user's count
        with pytest.raises(TooManyAttempts):  # but not the count of alice as seen from 10.0.0.9
            await users.check("alice", "guess-again", "ipv4:10.0.0.9:1")
        assert await users.check("alice", "alice-password", "ipv4:10.0.0.1:1")
        users.close()

    asyncio.run(main())


def test_a_cached_password_never_waits_for_the_scrypt_thread():
    clock = Clock()
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        return release.wait(10)

    async def main():
        users = users_with(clock)
        assert await users.check("bob", "bob-password")  # now cached
        busy = asyncio.ensure_future(users.scrypt.run("someone", hold))
        assert await asyncio.to_thread(started.wait, 10)
        assert await asyncio.wait_for(users.check("bob", "bob-password"), 1)  # the thread is still held
        release.set()
        await busy
        users.close()

    asyncio.run(main())


def test_concurrent_tries_of_one_password_share_one_scrypt(scrypt_runs):
    clock = Clock()

    async def main():
        users = users_with(clock, lock_after=100)
        results = await asyncio.gather(*(users.check("alice", "alice-password") for _ in range(20)))
        users.close()
        return results

    assert asyncio.run(main()) == [True] * 20
    assert len(scrypt_runs) == 1


def test_a_flood_of_wrong_passwords_is_cut_short_and_a_fresh_login_of_another_user_still_passes(scrypt_runs):
    clock = Clock()

    async def attempt(users, name, password):
        try:
            return await users.check(name, password, "ipv4:127.0.0.1:1")
        except TooManyAttempts:
            return "refused"

    async def main():
        users = users_with(clock)
        flood = [asyncio.ensure_future(attempt(users, "alice", f"wrong-{i}")) for i in range(200)]
        await asyncio.sleep(0)
        bob = await asyncio.wait_for(attempt(users, "bob", "bob-password"), 5)
        results = await asyncio.gather(*flood)
        users.close()
        return bob, results

    bob, results = asyncio.run(main())
    assert bob is True
    assert results.count("refused") >= 190 and results.count(True) == 0
    assert len(scrypt_runs) == 3 + 1  # alice's free failures (3 here), then none while she is locked; bob's


# --- a real deployment --------------------------------------------------------------------------

FLOOD_CONCURRENCY, FLOOD_AT_LEAST = 200, 400


async def wrong_password_flood(home, address, stop, answered):
    """Wrong passwords with alice's certificate, FLOOD_CONCURRENCY at a time over four connections,
    until `stop` is set and at least FLOOD_AT_LEAST were answered. Returns [(code, details, trailers)]."""
    channels = [grpc.aio.secure_channel(address, tls.channel_credentials(home, "alice")) for _ in range(4)]
    answers = []

    async def worker(w):
        stub = cl_gw_pb2_grpc.ClientGatewayStub(channels[w % len(channels)])
        while not stop.is_set() or len(answers) < FLOOD_AT_LEAST:
            try:
                await stub.ViewBalance(cl.ViewBalanceRequest(), timeout=30, metadata=(
                    ("x-strife-user", "alice"), ("x-strife-password", f"wrong-{w}-{len(answers)}")))
                answers.append((grpc.StatusCode.OK, "", {}))
            except grpc.aio.AioRpcError as exc:
                answers.append((exc.code(), exc.details(), dict(exc.trailing_metadata() or ())))
            answered.set()

    try:
        await asyncio.gather(*(worker(w) for w in range(FLOOD_CONCURRENCY)))
    finally:
        for channel in channels:
            await channel.close()
    return answers


async def balance_as(home, address, user, password, timeout=10.0):
    """One ViewBalance with the CLI's normal deadline: the status code."""
    async with grpc.aio.secure_channel(address, tls.channel_credentials(home, user)) as channel:
        try:
            await cl_gw_pb2_grpc.ClientGatewayStub(channel).ViewBalance(
                cl.ViewBalanceRequest(), timeout=timeout,
                metadata=(("x-strife-user", user), ("x-strife-password", password)))
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()


def test_a_wrong_password_flood_is_limited_while_another_users_fresh_login_succeeds(deployment):
    d = deployment()
    d.up()
    # a new password: the gateway has never verified it, so bob's next login needs a real scrypt check
    changed = d.cli("client", "bob", "passwd")
    assert changed.returncode == 0, changed.stderr
    address = load_deployment(d.home).of_kind("gateway")[0].address

    async def main():
        stop, answered = asyncio.Event(), asyncio.Event()
        flood = asyncio.ensure_future(wrong_password_flood(d.home, address, stop, answered))
        await answered.wait()  # the flood is under way: every worker has a call in flight
        try:
            bob = await balance_as(d.home, address, "bob", credentials.password(d.home, "bob"))
        finally:
            stop.set()
        return bob, await flood

    bob, answers = asyncio.run(main())
    assert bob == grpc.StatusCode.OK
    codes = collections.Counter(code for code, _, _ in answers)
    assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    # only the few attempts before each lockout got a password check; every other one was refused unchecked
    assert codes[grpc.StatusCode.UNAUTHENTICATED] <= 15, codes
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= len(answers) - 15, codes
    refusals = [(details, trailers) for code, details, trailers in answers if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert all(details.startswith(("too many failed logins for alice; try again in ",
                                   "too many password checks waiting for alice; try again in ")) and
               int(trailers["grpc-retry-pushback-ms"]) > 0 for details, trailers in refusals)
    assert any("failed logins" in details for details, _ in refusals)

    # once her lockout has passed, alice's right password works again
    right = credentials.password(d.home, "alice")
    wait_for(lambda: asyncio.run(balance_as(d.home, address, "alice", right)) == grpc.StatusCode.OK,
             timeout=330, what="alice's lockout to pass")
    assert d.cli("client", "alice", "balance").returncode == 0

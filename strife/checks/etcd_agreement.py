"""Whether the etcd members hold the same data: each member's hash of its key-value history up to
one revision they all have (etcd's HashKV, what its own corruption check compares).

Raft makes members agree on what was committed, but an etcd with a storage bug can come back from
a crash without writes it had acknowledged (etcd 3.5.0-3.5.5, README): then one member answers
"no decision" where another has a COMMIT. A single member has nothing to be compared with."""
import asyncio
import dataclasses

from strife.deployment import discovery
from strife.deployment.identities import OPERATOR

TIMEOUT = 3.0  # seconds for one member to answer; one that does not is left out, not counted against


@dataclasses.dataclass(frozen=True)
class MemberHash:
    name: str
    compact_revision: int  # hashes compare only between members compacted at the same revision
    hash: int


@dataclasses.dataclass
class Agreement:
    revision: int = 0                                           # where the hashes were taken
    compared: list = dataclasses.field(default_factory=list)    # members whose hashes were compared
    left_out: dict = dataclasses.field(default_factory=dict)    # member -> why it was not
    problems: list = dataclasses.field(default_factory=list)


def disagreements(revision, hashes):
    """Problems, one per group of members compacted alike whose hashes at `revision` differ."""
    problems = []
    by_compaction = {}
    for member in hashes:
        by_compaction.setdefault(member.compact_revision, []).append(member)
    for members in by_compaction.values():
        if len({m.hash for m in members}) > 1:
            problems.append(f"etcd members disagree on their data up to revision {revision}: "
                            + ", ".join(f"{m.name} hash {m.hash}" for m in members)
                            + " (a member lost or forked acknowledged writes; README, on etcd versions)")
    return problems


async def check(topology):
    """The Agreement of this deployment's etcd members (nothing to do with fewer than two)."""
    members = _members(topology)
    found = Agreement()
    if len(members) < 2:
        return found
    revisions = await asyncio.gather(*(_ask(topology, endpoint, _revision) for endpoint in members.values()))
    reached = {name: r for name, r in zip(members, revisions) if not isinstance(r, str)}
    found.left_out = {name: r for name, r in zip(members, revisions) if isinstance(r, str)}
    if len(reached) < 2:
        return found
    found.revision = min(reached.values())  # a revision every member reached has applied

    async def hashed(etcd):
        answer = await etcd.maintenance.hash_kv(found.revision, timeout=TIMEOUT)
        return answer.compact_revision, answer.hash
    answers = await asyncio.gather(*(_ask(topology, members[name], hashed) for name in reached))
    hashes = []
    for name, answer in zip(reached, answers):
        if isinstance(answer, str):
            found.left_out[name] = answer
        else:
            hashes.append(MemberHash(name, *answer))
    found.compared = [h.name for h in hashes]
    found.problems = disagreements(found.revision, hashes)
    return found


def _members(topology):
    """{member name: endpoint}: ours by name, an outside cluster's by its endpoints."""
    if topology.etcd.endpoints:
        return {endpoint: endpoint for endpoint in topology.etcd.endpoints}
    return {member.name: member.address for member in topology.of_kind("etcd")}


async def _revision(etcd):
    # serializable: this member's own applied revision, not the leader's
    return (await etcd.kv.get("/strife/", serializable=True, keys_only=True, limit=1, timeout=TIMEOUT)).header.revision


async def _ask(topology, endpoint, work):
    """`await work(etcd)` against one member only, or why it could not answer (a paused or cut-off
    member during a live audit: left out)."""
    try:
        async with discovery.client(topology, OPERATOR, endpoints=[endpoint]) as etcd:
            return await asyncio.wait_for(work(etcd), TIMEOUT * 2)
    except Exception as exc:  # unreachable, timed out, refused: not a disagreement
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

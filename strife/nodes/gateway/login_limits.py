"""Failed logins counted per key, with lockouts that double: the gateway's brake on password guessing.

After `lock_after` consecutive failures a key is locked for `first_lockout` seconds, and each
further failure (once the lockout has passed) doubles it, up to `max_lockout`. A success clears
the key; so does `forget_after` seconds without a failure. Keys are opaque to this module (the
gateway passes the user and the user seen from one source address); the clock is injected so
tests run in milliseconds.
"""
import collections
import dataclasses
import time


@dataclasses.dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginLimiter:
    def __init__(self, lock_after=5, first_lockout=1.0, max_lockout=300.0, forget_after=900.0,
                 max_keys=100_000, clock=time.monotonic):
        assert lock_after >= 1 and 0 < first_lockout <= max_lockout <= forget_after
        self.lock_after, self.first_lockout, self.max_lockout = lock_after, first_lockout, max_lockout
        self.forget_after, self.max_keys, self.clock = forget_after, max_keys, clock
        self._keys = collections.OrderedDict()  # key -> _Failures, least recently failed first

    def wait(self, *keys):
        """Seconds until all of `keys` may try again; 0 when they may now."""
        now = self.clock()
        return max([0.0] + [f.locked_until - now for f in map(self._keys.get, keys) if f is not None])

    def failed(self, *keys):
        """Count one failure for each key; returns the wait now in force (0 if none)."""
        now = self.clock()
        self._forget(now)
        for key in keys:
            failures = self._keys.pop(key, None) or _Failures()
            self._keys[key] = failures  # to the end: the most recent failure
            failures.count += 1
            failures.last = now
            beyond = failures.count - self.lock_after
            if beyond >= 0:
                # capped exponent: a huge count must not overflow the float
                failures.locked_until = now + min(self.max_lockout, self.first_lockout * 2 ** min(beyond, 40))
        return self.wait(*keys)

    def succeeded(self, *keys):
        for key in keys:
            self._keys.pop(key, None)

    def _forget(self, now):
        """Drop keys quiet for `forget_after` (their lockout is over, as max_lockout <= forget_after),
        then the oldest beyond `max_keys`, so the table stays bounded whatever callers send."""
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest.last + self.forget_after > now and len(self._keys) < self.max_keys:
                break
            self._keys.popitem(last=False)

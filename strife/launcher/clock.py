"""Time as the supervisor sees it. Tests pass a fake clock with the same three methods, so restart
policy, backoff and timeouts run in virtual milliseconds."""
import asyncio
import time


class Clock:
    def now(self):
        """Monotonic seconds: for durations."""
        return time.monotonic()

    def wall(self):
        """Seconds since the epoch: for uptime shown to people."""
        return time.time()

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)

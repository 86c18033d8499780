"""Registration's helper that runs a lease keep-alive and a key guard side by side."""
import asyncio

import pytest

from strife import discovery


def test_when_one_fails_the_other_is_cancelled_too():
    """After an etcd restart the keep-alive fails first; the old lease's guard used to live on and
    fight the new registration, rewriting the key back and forth hundreds of times a second."""
    async def main():
        guard_ended = asyncio.Event()

        async def keep_alive():
            raise ConnectionError("etcd away")

        async def guard():
            try:
                await asyncio.Future()
            finally:
                guard_ended.set()
        with pytest.raises(ConnectionError):
            await discovery._first_of(keep_alive(), guard())
        assert guard_ended.is_set()
    asyncio.run(main())

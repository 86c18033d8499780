"""Small asyncio helpers shared by the nodes."""
import asyncio
import contextlib


async def cancel(task):
    """Cancel a background task (if any) and wait until it has really stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

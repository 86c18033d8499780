"""top: the live view of a running deployment (strife/commands/top/app.py), or one frame as text."""
import asyncio
import json

from strife.commands import OK, deployment
from strife.core.errors import BadInput

ONCE_WINDOW = 1.0  # seconds between the two looks of --once: its rates cover this long


def run(args):
    topology = deployment(args, must_run=True)
    if args.json and not args.once:
        raise BadInput("--json goes with --once")
    if args.once:
        frame = asyncio.run(_one_frame(topology))
        from strife.commands.top import frame as frames
        print(json.dumps(frame.to_dict(), indent=2) if args.json else frames.text(frame))
        return OK
    from strife.commands.top.app import TopApp
    TopApp(topology).run()
    return OK


async def _one_frame(topology):
    from strife.commands.top.frame import Sampler
    sampler = Sampler(topology)
    await sampler.take()
    await asyncio.sleep(ONCE_WINDOW)
    return await sampler.take()

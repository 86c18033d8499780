"""Client node: a user's agent that delivers their payments to the gateway."""
from strife.nodes import runtime


class Client:
    KIND = "client"
    POLICY = {}

    def __init__(self, ctx):
        self.ctx = ctx

    async def start(self):
        pass

    async def stop(self):
        pass


if __name__ == "__main__":
    runtime.main(Client)

"""`strife top`: the live view (textual). A table of the nodes refreshed every second, the
payment figures above it, and keys that act on the selected node through the same paths as
`strife chaos`: the supervisor's control socket (pause, resume, kill, restart) and the node's
admin service (failpoints)."""
from __future__ import annotations

import asyncio

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Static

from strife.launcher.control import ControlClient, Refused
from strife.commands.top import frame as frames

REFRESH = 1.0


class FailpointPrompt(ModalScreen[str | None]):
    """A small input: STEP=ACTION for the selected node (Escape cancels)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, node: str, steps: tuple[str, ...]):
        super().__init__()
        self.node, self.steps = node, steps

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(f"arm a failpoint on {self.node}: STEP=ACTION (steps: {', '.join(self.steps) or 'none'}; "
                        f"actions: pause, delay:DURATION, error, crash)")
            yield Input(placeholder="prepare=pause", id="failpoint")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TopApp(App):
    TITLE = "strife top"
    CSS = """
    #figures { height: 3; padding: 0 1; }
    #message { height: 1; padding: 0 1; color: $warning; }
    #prompt { width: 90%; height: auto; border: round $accent; padding: 1; background: $panel; }
    FailpointPrompt { align: center middle; }
    """
    BINDINGS = [
        Binding("p", "pause", "Pause"), Binding("r", "resume", "Resume"), Binding("k", "kill", "Kill"),
        Binding("s", "restart", "Restart"), Binding("f", "failpoint", "Failpoint"),
        Binding("c", "clear", "Clear failpoints"), Binding("q", "quit", "Quit"),
    ]

    def __init__(self, topology, refresh: float = REFRESH):
        super().__init__()
        self.topology = topology
        self.sampler = frames.Sampler(topology)
        self.control = ControlClient(topology.layout, timeout=30.0)
        self.interval = refresh
        self.frame: frames.Frame | None = None
        self.frames_taken = 0

    def compose(self) -> ComposeResult:
        yield Static("looking...", id="figures")
        yield DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*frames.COLUMNS)
        await self.refresh_frame()
        self.set_interval(self.interval, self.refresh_frame)

    async def refresh_frame(self) -> None:
        frame = await self.sampler.take()
        self.frame, self.frames_taken = frame, self.frames_taken + 1
        self.query_one("#figures", Static).update(
            frames.summary(frame) + "\nfaults: " + ("; ".join(frame.faults) or "none"))
        table = self.query_one(DataTable)
        selected = self.selected()
        table.clear()
        for row in frame.nodes:
            table.add_row(*frames.cells(row), key=row.name)
        names = [row.name for row in frame.nodes]
        if selected in names:
            table.move_cursor(row=names.index(selected))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def say(self, text: str) -> None:
        self.query_one("#message", Static).update(text)

    async def _act(self, verb: str, work) -> None:
        node = self.selected()
        if node is None:
            return
        try:
            await work(node)
            self.say(f"{node}: {verb}")
        except Exception as exc:  # noqa: BLE001 (refusals are shown, the view goes on)
            self.say(f"{node}: {verb} refused: {exc}")
        await self.refresh_frame()

    async def action_pause(self) -> None:
        await self._act("paused", lambda node: asyncio.to_thread(self.control.pause, node))

    async def action_kill(self) -> None:
        await self._act("killed", lambda node: asyncio.to_thread(self.control.kill, node))

    async def action_restart(self) -> None:
        await self._act("restarted", lambda node: asyncio.to_thread(self.control.restart, node))

    async def action_resume(self) -> None:
        async def resume(node):  # as `strife chaos --resume`: the signal, and any pause failpoint
            try:
                await asyncio.to_thread(self.control.resume, node)
                refused = None
            except Refused as exc:
                refused = exc
            cleared = await self._admin(node, _clear_pauses) if self._kind(node) != "etcd" else []
            if refused is not None and not cleared:
                raise refused
        await self._act("resumed", resume)

    async def action_clear(self) -> None:
        await self._act("failpoints cleared", lambda node: self._admin(node, lambda admin: admin.clear("")))

    def action_failpoint(self) -> None:
        node = self.selected()
        if node is None:
            return
        from strife.core.failpoints import STEPS
        kind = self._kind(node)

        async def arm(text: str | None) -> None:
            if not text:
                return
            from strife.launcher import chaos

            async def set_it(node):
                _, step, action = chaos.parse_spec(f"{node}:{text}")
                chaos.check_step(self.topology, node, step)
                await self._admin(node, lambda admin: admin.set(step, action))
            await self._act(f"failpoint {text} armed", set_it)
        self.push_screen(FailpointPrompt(node, STEPS.get(kind, ())), arm)

    def _kind(self, node: str) -> str:
        return str(self.topology.node(node).kind)

    async def _admin(self, node, work):
        from strife.launcher.chaos import AdminClient
        async with AdminClient(self.topology, node) as admin:
            return await work(admin)


async def _clear_pauses(admin) -> list[str]:
    paused = [step for step, action in await admin.list() if action == "pause"]
    for step in paused:
        await admin.clear(step)
    return paused

"""`hostvisor console`: the live supervision tree, "top" views and drills, in a terminal.

Erlang's observer_cli for this agent: the tree on the left (each actor's state,
mailbox depth, messages handled, restarts), a "top" table on the right sorted by
mailbox, latency p99, busy time or restarts, and a detail pane for the selected
actor (for a VM: its status, the operation in flight, when it was last sampled).
`k` kills the selected actor and `R` restarts it, each after a confirmation.

Threads: textual's event loop draws; every read of the admin channel runs in a
worker thread (`_Channel` serialises them on one connection and reconnects after
the agent restarts), so a slow answer never freezes the screen. The agent's side
of a refresh is one snapshot (it reads counters, asks no actor; only the actors
that changed since the last refresh are encoded and sent, `snapshots`) plus, for
a selected VM, one ask with a 0.5 s deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static, Tree
from textual.widgets.tree import TreeNode

from hostvisor.api.admin.client import AdminClient
from hostvisor.api.console.snapshots import SnapshotView
from hostvisor.api.console.text import ago, detail_text, seconds, short_path, tree_label

SORTS: dict[str, tuple[str, Callable[[dict[str, Any]], float]]] = {
    "mailbox": ("mailbox", lambda a: float(a["mailbox_depth"])),
    "latency": ("latency p99", lambda a: float(a["latency_p99"] or 0.0)),
    "restarts": ("restarts", lambda a: float(a["restarts"])),
    "busy": ("busy time", lambda a: float(a["busy_total_seconds"])),
}
TOP_ROWS = 40
COLUMNS = (
    "path",
    "class",
    "state",
    "mailbox",
    "handled",
    "p50",
    "p99",
    "busy",
    "restarts",
    "last restart",
)


class Source(Protocol):
    """What the console reads and drills (the admin channel's client; tests may wrap it)."""

    def snapshot(self) -> dict[str, Any]: ...  # noqa: D102
    def detail(self, path: str) -> dict[str, Any]: ...  # noqa: D102
    def kill(self, path: str, reason: str = ...) -> dict[str, Any]: ...  # noqa: D102
    def restart(self, path: str) -> dict[str, Any]: ...  # noqa: D102


class Channel:
    """The admin socket, one request at a time, reconnected when the agent restarted.

    Snapshots are incremental (`snapshots.SnapshotView`): after the first, the agent
    sends only the actors that changed. Any thread; each call blocks up to the
    client's timeout. Raises OSError when the agent does not answer, `AdminError`
    when it refuses.
    """

    def __init__(self, path: Path) -> None:
        """Connect lazily to the socket at `path`."""
        self._path = path
        self._lock = threading.Lock()
        self._client: AdminClient | None = None
        self._view = SnapshotView()

    def _call(self, op: Callable[[AdminClient], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            if self._client is None:
                self._client = AdminClient(self._path)
                self._view.reset()  # perhaps a restarted agent: ask for everything
            try:
                return op(self._client)
            except OSError:
                self._client.close()
                self._client = None
                raise

    def snapshot(self) -> dict[str, Any]:
        """The full snapshot (`AdminClient.snapshot`'s shape), fetched as a delta."""
        view = self._view
        return self._call(lambda c: view.merge(c.request("snapshot", **view.params())))

    def detail(self, path: str) -> dict[str, Any]:
        """See `AdminClient.detail`."""
        return self._call(lambda c: c.detail(path))

    def kill(self, path: str, reason: str = "killed from the console") -> dict[str, Any]:
        """See `AdminClient.kill`."""
        return self._call(lambda c: c.kill(path, reason))

    def restart(self, path: str) -> dict[str, Any]:
        """See `AdminClient.restart`."""
        return self._call(lambda c: c.restart(path))

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class Confirm(ModalScreen[bool]):
    """Ask yes or no before a drill."""

    BINDINGS: ClassVar[list[BindingType]] = [
        ("y", "answer(True)", "yes"),
        ("n", "answer(False)", "no"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 70; height: auto; border: thick $error; padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        """Show `question`."""
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """A question and two buttons."""
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer with the button pressed."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:  # noqa: FBT001 - a key binding's argument
        """Answer from the keyboard."""
        self.dismiss(answer)


class Console(App[None]):
    """The console. `source` is read on worker threads; `interval` is the refresh period."""

    TITLE = "hostvisor console"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "sort('mailbox')", "top: mailbox"),
        Binding("l", "sort('latency')", "top: latency"),
        Binding("r", "sort('restarts')", "top: restarts"),
        Binding("b", "sort('busy')", "top: busy"),
        Binding("k", "kill", "kill"),
        Binding("R", "restart", "restart"),
        Binding("q", "quit", "quit"),
    ]
    DEFAULT_CSS = """
    #tree { width: 40%; }
    #top { height: 2fr; }
    #detail { height: 1fr; border-top: solid $accent; padding: 0 1; }
    """

    def __init__(self, source: Source, *, interval: float = 1.0) -> None:
        """Show what `source` reports, refreshed every `interval` seconds."""
        super().__init__()
        self.source = source
        self.interval = interval
        self.sort_by = "mailbox"
        self.selected: str | None = None
        self.snapshot: dict[str, Any] | None = None
        self.detail: dict[str, Any] | None = None
        self.nodes: dict[str, TreeNode[str]] = {}
        self.refreshes = 0
        self.error: str | None = None
        self._tree: Tree[str]
        self._table: DataTable[str]
        self._pane: Static

    def compose(self) -> ComposeResult:
        """Header, the tree, the top table and the detail pane, the key bar."""
        yield Header()
        with Horizontal():
            tree: Tree[str] = Tree("/", data="/", id="tree")
            tree.show_root = True
            yield tree
            with Vertical():
                yield DataTable(id="top", cursor_type="row", zebra_stripes=True)
                yield Static("select an actor", id="detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        """Set up the table and start refreshing."""
        self._tree = self.query_one("#tree", Tree)
        self._table = self.query_one("#top", DataTable)
        self._pane = self.query_one("#detail", Static)
        table = self._table
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.nodes["/"] = self._tree.root
        self.sub_title = f"top by {SORTS[self.sort_by][0]}"
        self.fetch()
        self.set_interval(self.interval, self.fetch)

    # -- reading (worker threads) -----------------------------------------------------

    @work(thread=True, exclusive=True, group="fetch")
    def fetch(self) -> None:
        """Read the snapshot and the selected actor's detail (a worker thread)."""
        selected = self.selected
        try:
            snapshot = self.source.snapshot()
            detail = self.source.detail(selected) if selected else None
        except Exception as error:  # noqa: BLE001 - shown on screen; the next refresh retries
            self.call_from_thread(self._failed, f"{type(error).__name__}: {error}")
            return
        self.call_from_thread(self._show, snapshot, detail)

    def _failed(self, error: str) -> None:
        self.error = error
        self.sub_title = f"agent not answering: {error}"

    def _show(self, snapshot: dict[str, Any], detail: dict[str, Any] | None) -> None:
        self.error = None
        self.snapshot = snapshot
        self.detail = detail
        self._draw_tree(snapshot["actors"])
        self._draw_top(snapshot["actors"])
        now = float(snapshot["time"])
        pane = self._pane  # not queried: a confirmation may be the screen shown
        if detail is not None:
            pane.update(detail_text(detail, now))
        sched, work_ = snapshot["scheduler"], snapshot["work"]
        self.sub_title = (
            f"top by {SORTS[self.sort_by][0]} | {len(snapshot['actors'])} actors | "
            f"scheduler {sched['workers']} workers ({sched['parked']} parked) | "
            f"work {work_['busy']} busy, {work_['queued']} queued"
        )
        self.refreshes += 1

    def _draw_tree(self, actors: list[dict[str, Any]]) -> None:
        """Update the tree in place: new actors added, gone ones removed, labels refreshed."""
        seen = set()
        for actor in actors:
            path = actor["path"]
            seen.add(path)
            node = self.nodes.get(path)
            if node is None:
                parent = self.nodes.get(actor["parent"] or "/")
                if parent is None:
                    continue  # its parent shows up first (depth first); gone meanwhile
                node = parent.add(Text(tree_label(actor)), data=path, expand=path.count("/") < 1)
                self.nodes[path] = node
                if path == self.selected:  # back after a restart: keep the cursor on it
                    self.call_after_refresh(self._tree.move_cursor, node)
            else:
                node.set_label(Text(tree_label(actor)))
            node.allow_expand = bool(actor["children"])
        for path in [p for p in self.nodes if p not in seen and p != "/"]:
            node = self.nodes.pop(path)
            if node.tree is not None and node.parent is not None:
                node.remove()

    def _draw_top(self, actors: list[dict[str, Any]]) -> None:
        table = self._table
        key = SORTS[self.sort_by][1]
        now = time.time()
        top = sorted(actors, key=key, reverse=True)[:TOP_ROWS]
        table.clear()
        for actor in top:
            table.add_row(
                short_path(actor["path"]),
                actor["actor_class"],
                actor["state"],
                str(actor["mailbox_depth"]),
                str(actor["messages_handled"]),
                seconds(actor["latency_p50"]),
                seconds(actor["latency_p99"]),
                seconds(actor["busy_total_seconds"]),
                str(actor["restarts"]),
                ago(actor["last_restart_at"], now),
                key=actor["path"],
            )

    def actor(self, path: str) -> dict[str, Any] | None:
        """The last snapshot's entry of `path` (for tests and the drills)."""
        for actor in (self.snapshot or {}).get("actors", []):
            if actor["path"] == path:
                return dict(actor)
        return None

    # -- selecting --------------------------------------------------------------------

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        """Show the highlighted actor's detail."""
        self.select(event.node.data)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Show the highlighted row's actor's detail (the operator's move, not a redraw)."""
        if event.data_table.has_focus and event.row_key.value is not None:
            self.select(event.row_key.value)

    def reveal(self, path: str) -> None:
        """Expand the tree down to `path`, put the cursor on it and select it."""
        node = self.nodes.get(path)
        if node is None:
            return
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        self.call_after_refresh(self._tree.move_cursor, node)  # once the expansion is drawn
        self.select(path)

    def select(self, path: str | None) -> None:
        """Make `path` the selected actor and read its detail now."""
        if path and path != self.selected:
            self.selected = path
            self.fetch()

    def action_sort(self, by: str) -> None:
        """Sort the top table by `by` (mailbox, latency, restarts, busy)."""
        self.sort_by = by
        if self.snapshot is not None:
            self._draw_top(self.snapshot["actors"])
        self.sub_title = f"top by {SORTS[by][0]}"

    # -- drills -----------------------------------------------------------------------

    def action_kill(self) -> None:
        """Kill the selected actor, once confirmed."""
        self._confirm("kill", "Kill {path}? Its supervisor restarts it (a crash).")

    def action_restart(self) -> None:
        """Restart the selected actor, once confirmed."""
        self._confirm("restart", "Restart {path}? It stops and starts again (no crash).")

    def _confirm(self, drill: str, question: str) -> None:
        path = self.selected
        if not path or path == "/":
            self.notify("select an actor first", severity="warning")
            return

        def answered(yes: bool | None) -> None:  # noqa: FBT001 - textual's callback
            if yes:
                self.drill(drill, path)

        self.push_screen(Confirm(question.format(path=path)), answered)

    @work(thread=True, group="drill")
    def drill(self, drill: str, path: str) -> None:
        """Run a confirmed drill (a worker thread); its outcome is notified."""
        try:
            if drill == "kill":
                self.source.kill(path)
            else:
                self.source.restart(path)
        except Exception as error:  # noqa: BLE001 - reported on screen
            self.call_from_thread(self.notify, f"{drill} {path}: {error}", severity="error")
            return
        self.call_from_thread(self.notify, f"{drill}: {path}")
        self.call_from_thread(self.fetch)

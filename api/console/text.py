"""How the console spells figures: durations, ages, paths, tree lines and the detail pane."""

from __future__ import annotations

from typing import Any


def seconds(value: float | None) -> str:
    """A duration for a narrow column: 12us, 3.4ms, 1.20s, or '-'."""
    if value is None:
        return "-"
    if value < 1e-3:  # noqa: PLR2004
        return f"{value * 1e6:.0f}us"
    if value < 1.0:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def ago(when: float | None, now: float) -> str:
    """How long ago a wall-clock time was: '12s ago', or '-'."""
    return "-" if when is None else f"{max(now - when, 0.0):.0f}s ago"


def short_path(path: str) -> str:
    """A path for a narrow column: a guest's 36-character id cut to its first 8."""
    head, _, last = path.rpartition("/")
    if head.endswith("/guests") and len(last) > 12:  # noqa: PLR2004
        return f"{head}/{last[:8]}…"
    return path


def tree_label(actor: dict[str, Any]) -> str:
    """An actor's line in the tree: its name, state, mailbox, handled, restarts."""
    name = actor["path"].rsplit("/", 1)[-1] or "/"
    text = f"{name} [{actor['state']}] mb={actor['mailbox_depth']} h={actor['messages_handled']}"
    if actor["restarts"]:
        text += f" r={actor['restarts']}"
    return text


def detail_text(detail: dict[str, Any], now: float) -> str:
    """The detail pane's text for one actor (and its VM, if it is one)."""
    lines = [
        f"{detail['path']}  ({detail['actor_class']})",
        (
            f"state {detail['state']}   mailbox {detail['mailbox_depth']}   "
            f"handled {detail['messages_handled']}   skipped {detail['skipped']}"
        ),
        (
            f"latency p50 {seconds(detail['latency_p50'])}   "
            f"p99 {seconds(detail['latency_p99'])}   "
            f"last {seconds(detail['last_handling_seconds'])}"
        ),
        (
            f"busy now {seconds(detail['busy_seconds'])}   "
            f"busy total {seconds(detail['busy_total_seconds'])}"
        ),
        (
            f"restarts {detail['restarts']}   last {ago(detail['last_restart_at'], now)}: "
            f"{detail['last_restart_reason'] or '-'}"
        ),
    ]
    vm = detail.get("vm")
    if isinstance(vm, dict):
        if "error" in vm:
            lines.append(f"VM {detail['vm_id']}: {vm['error']}")
        else:
            age = vm["last_sample_age_seconds"]
            sampled = "not reported" if age is None else f"{seconds(age)} ago"
            lines.append(
                f"VM {detail['vm_id']}: status {vm['status']}   operation in flight "
                f"{seconds(vm['operation_in_flight_seconds'])}   last sample {sampled}   "
                f"monitorResponse {vm['monitor_response']}"
            )
    return "\n".join(lines)

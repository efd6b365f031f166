"""The Task namespace and the Host verbs about tasks and jobs (reference/vdsm-wire.md §3.1).

Every handler sends one call to the task manager (`storage/tasks`) and answers its
future: the manager answers from memory, never waiting for a work. Answers are the
payload VDSM's Bridge puts on the wire (its `taskStatus`, `TaskInfo`,
`allTasksStatus`, `allTasksInfo`, `tasks` and `jobs` fields), not the envelope.

Where progress shows: SDM jobs carry VDSM's `progress` (percent) in Host.getJobs;
tasks have no progress field in VDSM, so Host.getAllTasks (which the Engine does
not read) adds `progress` (percent) to each task's details once its work reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.errors import Unavailable
from hostvisor.actors.storage.errors import TaskNotFinished, UnknownTask
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb
from hostvisor.supervision.registry import Registry

TASK_MANAGER = "storage/tasks"
SPM_TAG = "spm"
TASK_ID = Param(name="taskID", kind=Kind.STR, doc="the task's id")


@dataclass(frozen=True, slots=True)
class TaskApi:
    """What the task verbs reach: the registry that finds the task manager."""

    registry: Registry

    def manager(self) -> pykka.ActorRef[Any]:
        """Return the task manager, or raise Unavailable."""
        ref = self.registry.get(TASK_MANAGER)
        if ref is None:
            raise Unavailable(actor=TASK_MANAGER, reason="not running")
        return ref


def task_verbs(api: TaskApi) -> list[Verb]:
    """Return the Task verbs and the Host verbs that list tasks and jobs."""

    def on_manager(method: str, *args: Any, **kwargs: Any) -> pykka.Future[Any]:
        return call(api.manager(), method, *args, **kwargs)

    def acted(method: str) -> Any:
        async def handler(request: Call) -> bool:
            await settled(on_manager(method, request.args["taskID"]))
            return True

        return handler

    def jobs(request: Call) -> pykka.Future[Any]:
        job_ids = request.args["job_ids"] or ()
        return on_manager("jobs", request.args["job_type"] or None, list(job_ids))

    return [
        Verb(
            namespace="Task",
            name="getStatus",
            doc="A task's state, result, code and message.",
            params=(TASK_ID,),
            handler=lambda r: on_manager("status", r.args["taskID"]),
            returns="{taskID, taskState, taskResult, code, message}",
            errors=(UnknownTask,),
        ),
        Verb(
            namespace="Task",
            name="getInfo",
            doc="A task's id and the verb that started it.",
            params=(TASK_ID,),
            handler=lambda r: on_manager("info", r.args["taskID"]),
            returns="{id, verb}",
            errors=(UnknownTask,),
        ),
        Verb(
            namespace="Task",
            name="clear",
            doc="Forget a finished task.",
            params=(TASK_ID,),
            handler=acted("clear"),
            errors=(UnknownTask, TaskNotFinished),
        ),
        Verb(
            namespace="Task",
            name="stop",
            doc="Ask a running task to stop; it rolls back and finishes.",
            params=(TASK_ID,),
            handler=acted("stop_task"),
            errors=(UnknownTask,),
        ),
        Verb(
            namespace="Host",
            name="getAllTasksStatuses",
            doc="The status of every SPM task.",
            handler=lambda _r: on_manager("all_statuses", SPM_TAG),
            returns="{taskID: {taskID, taskState, taskResult, code, message}}",
        ),
        Verb(
            namespace="Host",
            name="getAllTasksInfo",
            doc="The id and verb of every SPM task.",
            handler=lambda _r: on_manager("all_info", SPM_TAG),
            returns="{taskID: {id, verb}}",
        ),
        Verb(
            namespace="Host",
            name="getAllTasks",
            doc="The details of every task, with progress (percent) when known.",
            handler=lambda _r: on_manager("all_details"),
            returns="{taskID: {id, verb, state, code, message, result, tag, progress?}}",
        ),
        Verb(
            namespace="Host",
            name="getJobs",
            doc="The SDM jobs of this host, with their progress (percent).",
            params=(
                Param(name="job_type", kind=Kind.STR, doc="storage or v2v", default=""),
                Param(name="job_ids", kind=Kind.ARRAY, doc="only these job ids", default=[]),
            ),
            handler=jobs,
            returns="{jobID: {id, status, description, job_type, progress?, error?}}",
        ),
    ]

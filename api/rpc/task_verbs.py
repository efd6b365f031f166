"""The Task namespace and the Host verbs about tasks and jobs (reference/vdsm-wire.md §3.1).

Every handler sends one call to the task manager (through its typed client,
`TaskProxy`) and answers its future: the manager answers from memory, never
waiting for a work. Answers are the payload VDSM's Bridge puts on the wire (its
`taskStatus`, `TaskInfo`, `allTasksStatus`, `allTasksInfo`, `tasks` and `jobs`
fields), not the envelope.

Where progress shows: SDM jobs carry VDSM's `progress` (percent) in Host.getJobs;
tasks have no progress field in VDSM, so Host.getAllTasks (which the Engine does
not read) adds `progress` (percent) to each task's details once its work reports.
SPM tasks outlive the agent: they are kept on the master domain and read back at
the next spmStart (actors/storage/task_store.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pykka

from hostvisor.actors.storage.errors import TaskNotFinished, UnknownTask
from hostvisor.actors.storage.proxy import StorageClient, TaskProxy
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.snapshot_verbs import virt_jobs
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi
from hostvisor.supervision.registry import Registry

SPM_TAG = "spm"
TaskId = Annotated[str, Arg("the task's id", wire="taskID")]


@dataclass(frozen=True, slots=True)
class TaskApi:
    """What the task verbs reach: the registry that finds the task manager, and the VMs."""

    registry: Registry
    vms: VmApi | None = None
    """The VMs, whose virt jobs (snapshots) Host.getJobs lists too; None: none here."""

    def manager(self) -> TaskProxy:
        """Return the task manager's client, or raise Unavailable."""
        return StorageClient(self.registry.get).tasks()


def task_verbs(api: TaskApi) -> list[Verb]:
    """Return the Task verbs and the Host verbs that list tasks and jobs."""
    return verbs_of(TaskHandlers(api))


class TaskHandlers:
    """The handlers of the task and job verbs, over one `TaskApi` (the API loop)."""

    def __init__(self, api: TaskApi) -> None:
        """Serve through `api`."""
        self.api = api

    @verb(
        "Task",
        "getStatus",
        doc="A task's state, result, code and message.",
        returns="{taskID, taskState, taskResult, code, message}",
        errors=(UnknownTask,),
    )
    def status(self, *, task_id: TaskId) -> pykka.Future[Any]:
        """Task.getStatus."""
        return self.api.manager().status(task_id)

    @verb(
        "Task",
        "getInfo",
        doc="A task's id and the verb that started it.",
        returns="{id, verb}",
        errors=(UnknownTask,),
    )
    def info(self, *, task_id: TaskId) -> pykka.Future[Any]:
        """Task.getInfo."""
        return self.api.manager().info(task_id)

    @verb("Task", "clear", doc="Forget a finished task.", errors=(UnknownTask, TaskNotFinished))
    async def clear(self, *, task_id: TaskId) -> bool:
        """Task.clear."""
        await settled(self.api.manager().clear(task_id))
        return True

    @verb(
        "Task",
        "stop",
        doc="Ask a running task to stop; it rolls back and finishes.",
        errors=(UnknownTask,),
    )
    async def stop(self, *, task_id: TaskId) -> bool:
        """Task.stop."""
        await settled(self.api.manager().stop_task(task_id))
        return True

    @verb(
        "Task",
        "revert",
        doc="Roll a finished task back; it then reads cleanSuccess.",
        errors=(UnknownTask, TaskNotFinished),
        timeout=120.0,
    )
    async def revert(self, *, task_id: TaskId) -> bool:
        """Task.revert: as JsonRpcVdsServer.revertTask sends it (refused while it runs)."""
        await settled(self.api.manager().revert(task_id))
        return True

    @verb(
        "Host",
        "getAllTasksStatuses",
        doc="The status of every SPM task.",
        returns="{taskID: {taskID, taskState, taskResult, code, message}}",
    )
    def all_statuses(self) -> pykka.Future[Any]:
        """Host.getAllTasksStatuses."""
        return self.api.manager().all_statuses(SPM_TAG)

    @verb(
        "Host",
        "getAllTasksInfo",
        doc="The id and verb of every SPM task.",
        returns="{taskID: {id, verb}}",
    )
    def all_info(self) -> pykka.Future[Any]:
        """Host.getAllTasksInfo."""
        return self.api.manager().all_info(SPM_TAG)

    @verb(
        "Host",
        "getAllTasks",
        doc="The details of every task, with progress (percent) when known.",
        returns="{taskID: {id, verb, state, code, message, result, tag, progress?}}",
    )
    def all_details(self) -> pykka.Future[Any]:
        """Host.getAllTasks."""
        return self.api.manager().all_details()

    @verb(
        "Host",
        "getJobs",
        doc="The SDM jobs and the VMs' virt jobs of this host, with their progress (percent).",
        returns="{jobID: {id, status, description, job_type, progress?, error?}}",
    )
    async def jobs(
        self,
        *,
        job_type: Annotated[str, Arg("storage, virt or v2v")] = "",
        job_ids: Annotated[list[str], Arg("only these job ids", default=[])],
    ) -> dict[str, Any]:
        """Host.getJobs: the SDM jobs, and the snapshots the VMs run (VirtJobCallback polls)."""
        found = dict(await settled(self.api.manager().jobs(job_type or None, job_ids or ())))
        if self.api.vms is not None:
            found.update(await virt_jobs(self.api.vms, job_type or None, job_ids or ()))
        return found

"""Guests, whatever runs them: the status model every VM's actor composes.

`model.GuestModel` holds what a guest reports (status, exit, figures, the entry
posted to the VM board) and the rules of how it changes; `actor.GuestActor` adds
the answers, operations off the actor's thread and timers. `VmActor`
(`hostvisor.actors.vm`, libvirt) and `ContainerActor` (`hostvisor.actors.container`,
docker) build on them. The board (`board.VmBoard`) lists every guest's last entry.
"""

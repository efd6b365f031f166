"""One builder per branch of the host's tree (see `hostvisor.supervision.tree`)."""

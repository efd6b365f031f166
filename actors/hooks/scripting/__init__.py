"""What hook scripts import: this directory is on their PYTHONPATH (`import hooking`).

VDSM puts its `vdsm/hook` directory on its hook scripts' PYTHONPATH so that they can
`import hooking`; the runner puts this one there, so VDSM's Python hooks run unchanged.
"""

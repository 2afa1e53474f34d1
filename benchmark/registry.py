"""The three registries, plus third-party plug-ins through Python entry points.

Built-in methods, tasks and spaces register themselves when their packages are imported.
Other packages add theirs under the entry-point groups ``egsbench.methods`` and
``egsbench.tasks`` (``egsbench.spaces`` for spaces): each entry point names a module, or an
object inside one, whose import registers the component.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..methods import METHODS
from ..tasks import TASKS
from ..tasks.spaces import SPACES, UserError

__all__ = ["METHODS", "SPACES", "TASKS", "load_plugins"]

GROUPS = ("egsbench.methods", "egsbench.tasks", "egsbench.spaces")
_loaded = False


def load_plugins() -> None:
    """Import every installed plug-in once; a broken plug-in is named in the error."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for group in GROUPS:
        for ep in entry_points(group=group):
            try:
                ep.load()
            except Exception as err:  # a plug-in may fail in any way; say which one
                raise UserError(f"plug-in {ep.name!r} ({ep.value}) in {group} failed to load: {err}") from err

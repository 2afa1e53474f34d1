"""The three registries, plus third-party plug-ins through Python entry points.

Built-in methods, tasks and spaces register themselves when their packages are imported.
Other packages add theirs under the entry-point groups ``egsbench.methods``,
``egsbench.tasks`` and ``egsbench.spaces``: each entry point names a module, or an object
inside one, whose import registers the component. Each registry imports its group the first
time it is asked for a name, so nothing needs to call :func:`load_plugins` first; it stays as
the explicit form (and ``reload=True`` re-reads the installed entry points).
"""

from __future__ import annotations

from ..methods import METHODS
from ..tasks import TASKS
from ..tasks.spaces import SPACES

__all__ = ["METHODS", "SPACES", "TASKS", "load_plugins"]


def load_plugins(reload: bool = False) -> None:
    """Import every installed plug-in (each registry does this by itself on first use)."""
    for registry in (SPACES, METHODS, TASKS):
        registry.load_plugins(reload=reload)

"""An EGS-Bench plug-in example: the ``single-level-softmax`` method and the ``imagefolder32`` task.

Installed with ``pip install -e examples/plugin``, its entry points make both appear in
``egsbench list methods`` / ``egsbench list tasks``; see ``docs/adding-a-method.md`` and
``docs/adding-a-task.md``.
"""

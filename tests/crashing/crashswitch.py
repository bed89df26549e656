"""Test-only: a decoder that crashes its process, for the reliability tests.

A process that imports this module with ``PALETTE_DASK_TEST_CRASH_ON`` set
exits at once, as a segfault in a decoder would, when it meets an image whose
URI holds that text. The workers of a test cluster import it as a Dask preload;
every Python process started with this folder on ``PYTHONPATH`` (the processes
that redo a crashing partition) imports it through ``sitecustomize``.
"""

import os

CRASH_ON = os.environ.get("PALETTE_DASK_TEST_CRASH_ON")
CRASH_EXIT_CODE = 70

if CRASH_ON:
    import palette_dask.tasks as tasks

    # A Dask preload may run more than once in a worker: keep the first original.
    if not hasattr(tasks, "working_image_row"):
        tasks.working_image_row = tasks._image_row

    def crashing(uri, *args, **kwargs):
        if CRASH_ON in uri:
            os._exit(CRASH_EXIT_CODE)
        return tasks.working_image_row(uri, *args, **kwargs)

    tasks._image_row = crashing

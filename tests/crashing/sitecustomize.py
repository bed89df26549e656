"""Test-only: a decoder that crashes its process, for the reliability tests.

Every Python process started with this folder on ``PYTHONPATH`` and
``PALETTE_DASK_TEST_CRASH_ON`` set (the workers of a test cluster, the
processes that redo a crashing partition) exits at once, as a segfault in a
decoder would, when it meets an image whose URI holds that text.
"""

import os

CRASH_ON = os.environ.get("PALETTE_DASK_TEST_CRASH_ON")
CRASH_EXIT_CODE = 70

if CRASH_ON:
    import palette_dask.tasks as tasks

    working = tasks._image_row

    def crashing(uri, *args, **kwargs):
        if CRASH_ON in uri:
            os._exit(CRASH_EXIT_CODE)
        return working(uri, *args, **kwargs)

    tasks._image_row = crashing

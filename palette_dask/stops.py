"""How a job that stops early says so: what happened, what it kept, what to do.

A job stops early when it is interrupted (Ctrl-C), when the output cannot take
its files (a full or read-only file system, refused permissions), when it
loses its Dask scheduler, when its inputs fail as a whole, or on a defect.
:func:`reported_stops` turns each of these into one :class:`JobStopped`,
records it in ``_job.json`` (``status`` ``interrupted`` or ``failed``, with
the ``reason``) where the output can still be written, and raises it: the
command line prints its three lines and exits with its code. Every partition
written whole before the stop stays; running the same command again resumes
from them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from datetime import datetime, timezone

from .errors import JobStopped, SchedulerUnreachableError, UsageError, VersionMismatchError
from .spec import JobSpec
from .storage import filesystem, join, write_atomic
from .tables import write_job_file

logger = logging.getLogger(__name__)

RESUME = "run the same command again to resume: the complete partitions are kept"
# The room kept in the output for the record of a stop (see keep_room).
ROOM_FILE = "_job.room"
ROOM_BYTES = 64 * 1024
# Errors of a job that cannot start as asked (settings, versions, an output holding
# another dataset): not stops, their messages are the user's answer.
NOT_STOPS = (
    UsageError,
    VersionMismatchError,
    SchedulerUnreachableError,
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
)


def stopped_by(exc: BaseException, spec: JobSpec, client=None) -> JobStopped:
    """The :class:`JobStopped` that says what ``exc`` means for the job run by ``client``."""
    if isinstance(exc, JobStopped):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return JobStopped("interrupted", advice=RESUME, status="interrupted")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return JobStopped(
            f"the output's file system is full ({_file_of(exc, spec)})",
            advice=f"free space and {RESUME}",
        )
    if isinstance(exc, PermissionError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    ):
        return JobStopped(
            f"cannot write the output: {exc.strerror or exc} ({_file_of(exc, spec)})",
            advice=f"make {spec.output} writable, or choose another output, and {RESUME}",
        )
    if _lost_scheduler(exc, client):
        where = f" at {client.scheduler.address}" if client is not None else ""
        return JobStopped(
            f"lost the Dask scheduler{where}",
            advice=f"start the scheduler again (or another) and {RESUME}",
        )
    return JobStopped(
        f"the job failed: {type(exc).__name__}: {exc}",
        advice=f"{RESUME}; if it fails again, run it with --log-level debug and report the "
        "traceback",
    )


def _file_of(exc: OSError, spec: JobSpec) -> str:
    return str(exc.filename) if exc.filename else spec.output


def _lost_scheduler(exc: BaseException, client) -> bool:
    from distributed.comm.core import CommClosedError

    if isinstance(exc, CommClosedError) or "stream is closed" in str(exc).lower():
        return True
    return client is not None and client.status != "running"


def keep_room(spec: JobSpec) -> None:
    """Keep room in the output for the record of a stop (:data:`ROOM_FILE`): a file system
    that fills up takes the job's last partition, not the record of what it kept."""
    write_atomic(join(spec.output, ROOM_FILE), bytes(ROOM_BYTES), spec.storage_options)


def release_room(spec: JobSpec) -> None:
    """Give back the room :func:`keep_room` kept, if it is there."""
    fs, path = filesystem(join(spec.output, ROOM_FILE), spec.storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


@contextlib.contextmanager
def reported_stops(spec: JobSpec, record: dict, kept, client=None) -> Iterator[None]:
    """Turn anything that stops the job in this context into a :class:`JobStopped`, record
    it in ``_job.json`` and raise it; ``kept()`` says what the job had written by then."""
    try:
        yield
    except NOT_STOPS:
        raise  # the job could not start as asked: its own message says why
    except BaseException as exc:  # Ctrl-C too: the job is stopping whatever the cause
        stopped = stopped_by(exc, spec, client)
        if not stopped.kept:
            stopped.kept = kept()
        logger.debug("the job stopped", exc_info=exc)
        stopped_record = {
            **record,
            "status": stopped.status,
            "reason": stopped.reason,
            "stopped": datetime.now(timezone.utc).isoformat(),
        }
        if record:  # the job had begun to write: say how it stopped
            with contextlib.suppress(Exception):  # a read-only output cannot take it
                release_room(spec)
                write_job_file(spec.output, stopped_record, spec.storage_options)
        raise stopped from exc

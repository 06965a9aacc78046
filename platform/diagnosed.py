"""Errors the platform diagnoses itself: bad input, impossible settings, data that does not fit.

Their messages name the file or field and what to change, so a traceback adds nothing: the CLI
prints `error: MESSAGE` for them. Prefect logs every exception a flow or task run raises with its
traceback; `quiet_prefect_run_logs()` keeps the one-line message of these (`-v` keeps everything).
"""

from __future__ import annotations

import logging

from millivid.config import ConfigError
from millivid.data.columns import DataError
from millivid_platform.object_store import ObjectStoreUnavailable

DIAGNOSED = (ConfigError, DataError, ObjectStoreUnavailable)
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class DropDiagnosedTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DIAGNOSED):
            record.exc_info, record.exc_text = None, None
        return True


_FILTER = DropDiagnosedTracebacks()


def quiet_prefect_run_logs() -> None:
    for name in PREFECT_RUN_LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)  # the same filter object is added once

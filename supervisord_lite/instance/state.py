"""The states an instance can be in: the one enum the daemon, ``supctl`` and the status
page use (the standard library's enum only: ``supctl`` imports it on every run)."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"

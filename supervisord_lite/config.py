"""The configuration, as the rest of the code imports it: one module, re-exporting.

The parts, each owning one thing:

- :mod:`config_yaml`: the YAML reader with line numbers (the only yaml import);
- :mod:`config_values`: value types and their text forms (addresses, sizes, signals);
- :mod:`config_validators` (and :mod:`config_templates`, for placeholders): how one
  value is read and checked, errors naming path and line
  (``apps.web.stop.timeout: must be a positive number of seconds``);
- :mod:`config_schema`: how a setting is declared (key, type, default, validator, doc);
- :mod:`config_settings`: the frozen dataclasses, every setting declared once on them;
- :mod:`config_rules`: rules across the settings of a section;
- :mod:`config_parser`: the generic walk over the declarations, ``parse_config``;
- :mod:`config_docs`: the reference generated from the declarations.

General rules of the loader: unknown keys are errors that list the valid keys. A
key written as null means "none" for a setting whose type says "or null"; for a
section, its defaults, except ``health`` and ``release`` (none) and
``supervisor.http`` (the API disabled); for ``instances``, ``env``, ``listen`` and
``depends_on``, their defaults; any other setting rejects it. Relative paths are
resolved against the config file's directory, unless the file name is a pseudo
name such as ``<config>``.
"""

from __future__ import annotations

from .config_docs import describe_settings
from .config_parser import load_config, parse_config
from .config_settings import (
    DEFAULT_READY_DELAY,
    DEFAULT_READY_TCP,
    AppConfig,
    BackoffConfig,
    CheckConfig,
    Config,
    ControlSocketConfig,
    DeployTasksConfig,
    HealthConfig,
    HttpConfig,
    LogConfig,
    LogsConfig,
    NotifyConfig,
    ReadyConfig,
    ReleaseConfig,
    ReloadConfig,
    StopConfig,
    SupervisorConfig,
)
from .config_values import (
    DEFAULT_INSTANCES,
    LOG_LEVELS,
    PLACEHOLDERS,
    ListenAddress,
    LogFormat,
    RestartPolicy,
    parse_address,
    parse_signal,
    parse_size,
    render,
)

__all__ = [
    "DEFAULT_INSTANCES",
    "DEFAULT_READY_DELAY",
    "DEFAULT_READY_TCP",
    "LOG_LEVELS",
    "PLACEHOLDERS",
    "AppConfig",
    "BackoffConfig",
    "CheckConfig",
    "Config",
    "ControlSocketConfig",
    "DeployTasksConfig",
    "HealthConfig",
    "HttpConfig",
    "ListenAddress",
    "LogConfig",
    "LogFormat",
    "LogsConfig",
    "NotifyConfig",
    "ReadyConfig",
    "ReleaseConfig",
    "ReloadConfig",
    "RestartPolicy",
    "StopConfig",
    "SupervisorConfig",
    "describe_settings",
    "load_config",
    "parse_address",
    "parse_config",
    "parse_signal",
    "parse_size",
    "render",
]

"""``supervisord-lite import``: another tool's configuration as a config of ours.

Owns turning supervisord, Procfile and systemd configurations into our YAML and a
fidelity report (:mod:`.report`): one module per source format (``supervisord*``,
``procfile``, ``systemd*``), :mod:`.source` for reading files and telling their
format, :mod:`.emit` for the YAML. It may import the config layer (our keys' names,
the YAML writer, signal names) and :mod:`errors`; nothing of the daemon. It prints
nothing: the CLI prints the text and the report and exits with
:attr:`Report.exit_status` (or 2 on a :class:`SourceError`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import procfile, supervisord, systemd
from .emit import ImportedApp, emit, unique_names
from .report import Report, SourceError
from .source import FORMATS, guess_format, read_text

DEFAULT_PORT_BASE = procfile.DEFAULT_PORT_BASE

__all__ = ["DEFAULT_PORT_BASE", "FORMATS", "Imported", "SourceError", "import_files"]


@dataclass(frozen=True)
class Imported:
    text: str  # our YAML
    report: Report


def import_files(
    files: list[str], source_format: str | None = None, port_base: int = DEFAULT_PORT_BASE
) -> Imported:
    """Import ``files`` (each of ``source_format``, or of the format it looks like).

    Raises :class:`SourceError` (naming file and line) when one cannot be read or
    parsed; nothing is returned then, so nothing half-imported is printed.
    """
    report = Report()
    apps: list[ImportedApp] = []
    systemd_units: list[str] = []
    for path in files:
        kind = source_format or guess_format(path, read_text(path))
        if kind == "supervisord":
            apps += supervisord.load(path, report)
        elif kind == "procfile":
            apps += procfile.load(path, report, port_base)
        else:
            systemd_units.append(path)
    apps += systemd.load(systemd_units, report)
    unique_names(apps, report)
    return Imported(emit(apps, files), report)

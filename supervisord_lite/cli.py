"""``supervisord-lite``: run the daemon in the foreground, check a config, or import one.

Exit status: 0 done (or the config is valid), 1 the daemon failed, 2 config or
usage error. With no ``-c`` it runs the bundled demo (an HTTP app as primary and
backup on 127.0.0.1:8180) on the default state_dir. ``supervisord-lite import
[--from FORMAT] FILE...`` prints our config for another tool's configuration (see
:mod:`importer`): exit 0 all mapped, 1 something approximated or not mapped, 2 the
input cannot be read or parsed.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from . import __version__
from .config import reference
from .config.parser import load_config, parse_config
from .config.settings import Config
from .errors import ConfigError, SupervisorError
from .host import envfile


def demo_config() -> Config:
    text = resources.files("supervisord_lite.demo").joinpath("demo.yaml").read_text()
    return parse_config(text.replace("@PYTHON@", sys.executable), "<bundled demo config>")


def import_main(argv: list[str]) -> None:
    """``supervisord-lite import``: our YAML on stdout, the fidelity report on stderr."""
    from . import importer  # only this subcommand needs it

    parser = argparse.ArgumentParser(
        prog="supervisord-lite import",
        description="Print a config of ours for supervisord, Procfile or systemd files "
        "(stdout) and a fidelity report (stderr): exit 0 all mapped, 1 something "
        "approximated or not mapped, 2 unreadable input.",
    )
    parser.add_argument(
        "--from",
        dest="source_format",
        choices=importer.FORMATS,
        help="the files' format (default: guessed from each file)",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=importer.DEFAULT_PORT_BASE,
        help="first port given to a Procfile's $PORT (then +100 per process type, "
        f"as foreman does; default {importer.DEFAULT_PORT_BASE})",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        imported = importer.import_files(args.files, args.source_format, args.port_base)
    except ConfigError as exc:
        print(f"supervisord-lite import: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(imported.text)
    sys.stderr.write(imported.report.text())
    sys.exit(imported.report.exit_status)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["import"]:
        import_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="supervisord-lite",
        description="On-host process supervisor (runs in the foreground; see supctl).",
        epilog="supervisord-lite import [--from supervisord|procfile|systemd] FILE...: "
        "print a config of ours for another tool's configuration (--help for more).",
    )
    parser.add_argument("-c", "--config", help="YAML config file (default: the bundled demo)")
    parser.add_argument(
        "--check", action="store_true", help="validate the config and exit 0 (valid) or 2 (invalid)"
    )
    parser.add_argument(
        "--help-config", action="store_true", help="print the reference of every config key"
    )
    parser.add_argument("--version", action="version", version=f"supervisord-lite {__version__}")
    args = parser.parse_args(argv)
    if args.help_config:
        print(reference.reference_text(), end="")
        sys.exit(0)
    try:
        config = load_config(args.config) if args.config else demo_config()
        if args.check:
            envfile.check(config)  # a spawn would fail on it: say so now, with file:line
    except ConfigError as exc:
        print(f"supervisord-lite: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.check:
        print(f"{args.config or 'demo config'}: OK ({len(config.apps)} apps)")
        sys.exit(0)
    if not args.config:
        print(
            "supervisord-lite: no -c given, running the bundled demo: "
            "try `supctl status` and `curl http://127.0.0.1:8180/`",
            file=sys.stderr,
        )
    from .daemon.main import run  # the daemon's imports are not needed for --check

    try:
        code = run(config)
    except SupervisorError as exc:
        print(f"supervisord-lite: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()

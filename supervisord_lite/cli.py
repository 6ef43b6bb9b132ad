"""``supervisord-lite``: run the daemon in the foreground, or check a config.

Exit status: 0 done (or the config is valid), 1 the daemon failed, 2 config or
usage error. With no ``-c`` it runs the bundled demo (an HTTP app as primary and
backup on 127.0.0.1:8180) on the default state_dir.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from . import __version__, config_docs, envfile
from .config import Config, load_config, parse_config
from .errors import ConfigError, SupervisorError


def demo_config() -> Config:
    text = resources.files("supervisord_lite.demo").joinpath("demo.yaml").read_text()
    return parse_config(text.replace("@PYTHON@", sys.executable), "<bundled demo config>")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="supervisord-lite",
        description="On-host process supervisor (runs in the foreground; see supctl).",
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
        print(config_docs.reference_text(), end="")
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
    from .daemon import run  # the daemon's imports are not needed for --check

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

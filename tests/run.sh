#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run lint, types and tests.
# This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the end-to-end tests use as a real user would (curl; nginx in front).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# The status page's browser tests (tests/test_status_page.py); zsh for completion's.
command -v chromium >/dev/null || missing+=(chromium)
command -v zsh >/dev/null || missing+=(zsh)
[ -x /usr/bin/python3 ] || missing+=(python3)  # the apps of the unprivileged test user (test_trust)
command -v promtool >/dev/null || missing+=(prometheus)  # promtool: tests/test_prometheus.py
# Real app servers (tests/test_servers.py): Unicorn and Puma from Debian, wrk for load.
command -v unicorn >/dev/null || missing+=(unicorn)
command -v puma >/dev/null || missing+=(puma)
command -v wrk >/dev/null || missing+=(wrk)
# etc/logrotate.conf is checked by the real logrotate (tests/test_etc.py)
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || missing+=(logrotate)
dpkg -s ruby-sd-notify >/dev/null 2>&1 || missing+=(ruby-sd-notify)
# A real systemd in a container (../shared/tools/systemd-box: tests/test_etc.py, test_fleet.py)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
# A Clojure/Ring/Jetty app in a JVM (tests/test_jvm.py, tests/bench/bench_jvm.py)
command -v java >/dev/null || missing+=(default-jre-headless)
[ -f /usr/share/java/clojure.jar ] || missing+=(clojure)
[ -f /usr/share/java/ring-jetty-adapter.jar ] || missing+=(libring-jetty-adapter-clojure)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || echo "run.sh: could not install ${missing[*]}; tests that need them will be skipped" >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

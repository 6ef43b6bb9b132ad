"""Prometheus's own tools judge contrib/prometheus and a live daemon's /metrics.

``promtool`` (Debian package ``prometheus``, installed by tests/run.sh) checks the
example scrape config and the alerting rules, runs the rules' unit tests, and lints
the /metrics of a real daemon that has deployed once, failed a deploy once and so
has data in every family. Skipped, with the reason, only when promtool is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DaemonFactory
from helpers import REPO, http_get, wait_until
from helpers.releases import APP, assert_failed, assert_ok, make_release, start_site
from prometheus_client.parser import text_string_to_metric_families

CONTRIB = REPO / "contrib" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (tests/run.sh installs `prometheus`)"
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=CONTRIB,
    )


def assert_success(cp: subprocess.CompletedProcess[str]) -> str:
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, f"promtool exited {cp.returncode}:\n{out}"
    return out


def test_scrape_config_is_valid() -> None:
    out = assert_success(promtool("check", "config", "prometheus.yml"))
    assert "SUCCESS" in out and "1 rule files found" in out, out


def test_alerting_rules_are_valid() -> None:
    out = assert_success(promtool("check", "rules", "supervisord-lite.rules.yml"))
    assert "SUCCESS: 6 rules found" in out, out


def test_alerting_rules_pass_their_unit_tests() -> None:
    out = assert_success(promtool("test", "rules", "supervisord-lite.rules.test.yml"))
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_rule_tests_can_fail(tmp_path: Path) -> None:
    """The rules' tests are not vacuous: against rules that never fire, they fail."""
    rules = (CONTRIB / "supervisord-lite.rules.yml").read_text()
    silent = tmp_path / "supervisord-lite.rules.yml"
    silent.write_text(rules.replace("for: 2m", "for: 2h"))  # SupervisordLiteDown never fires
    tests = tmp_path / "t.yml"
    tests.write_text((CONTRIB / "supervisord-lite.rules.test.yml").read_text())
    cp = promtool("test", "rules", str(tests))
    assert cp.returncode != 0 and "SupervisordLiteDown" in cp.stdout + cp.stderr


def test_live_metrics_pass_promtool_check_metrics(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A daemon after one good and one failed deploy: `promtool check metrics` says
    nothing, and the deploy counters and histograms hold those two deploys."""
    site = start_site(make_daemon, tmp_path, settle=0)
    make_release(site.root, "v2")
    make_release(site.root, "bad", "crash")
    assert_ok(site.deploy("deploy", APP, "v2"))
    assert_failed(site.deploy("deploy", APP, "bad"), "deploy of bad failed")
    port = site.daemon.http_port
    assert port is not None

    def scrape() -> str:
        code, body = http_get("127.0.0.1", port, "/metrics")
        assert code == 200
        return body.decode()

    # CPU seconds appear once the daemon has sampled the new generations
    wait_until(
        lambda: "supervisord_lite_instance_cpu_seconds_total{" in scrape(),
        15.0,
        "CPU samples in /metrics",
    )
    text = scrape()
    cp = promtool("check", "metrics", stdin=text)
    assert cp.returncode == 0 and not (cp.stdout + cp.stderr).strip(), cp.stdout + cp.stderr

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("supervisord_lite_deploys_total", app=APP, result="ok") == 1
    assert value("supervisord_lite_deploys_total", app=APP, result="failed") == 1
    assert value("supervisord_lite_deploy_duration_seconds_count", app=APP) == 2
    assert value("supervisord_lite_deploy_duration_seconds_bucket", app=APP, le="+Inf") == 2
    # v2 on both; bad never became ready on the backup, whose v2 generation kept serving
    assert value("supervisord_lite_swaps_total", result="ok") == 2
    assert value("supervisord_lite_swaps_total", result="failed") == 1
    assert value("supervisord_lite_swap_duration_seconds_count") == 3
    for inst in ("primary", "backup"):
        ids = {"app": APP, "app_instance": inst}
        assert value("supervisord_lite_instance_info", **ids, release="v2") == 1
        assert value("supervisord_lite_instance_start_time_seconds", **ids) > 1e9
    assert value("process_start_time_seconds") > 1e9


def test_check_metrics_catches_a_badly_named_metric() -> None:
    """promtool check metrics is not silent on anything: a gauge named _total fails."""
    bad = "# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n"
    cp = promtool("check", "metrics", stdin=bad)
    assert (cp.stdout + cp.stderr).strip(), "promtool check metrics accepted a bad name"

"""`make setup-browser` (.ci/setup-browser): installs chromium with apt-get when it is missing and
never fails, saying why when it cannot. apt-get is a fake here: nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPT = ROOT / ".ci" / "setup-browser"

#: a fake apt-get: logs its arguments; `install` fails until `update` ran (when FIX_ON_UPDATE is
#: set) and then puts a fake browser on PATH; SLEEP_S makes every call hang that long
FAKE_APT = """#!/usr/bin/env bash
echo "$*" >> "$LOG"
[ -n "${SLEEP_S:-}" ] && exec sleep "$SLEEP_S"
case "$1" in
  update) [ -n "${FIX_ON_UPDATE:-}" ] && touch "$BIN/.updated"; exit 0 ;;
  install)
    if [ -e "$BIN/.updated" ]; then
      printf '#!/bin/sh\\n' > "$BIN/fakechromium"; chmod +x "$BIN/fakechromium"; exit 0
    fi
    echo "E: Unable to locate package chromium" >&2; exit 100 ;;
esac
"""


@pytest.fixture
def fake_apt(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT)
    apt.chmod(0o755)
    log = tmp_path / "apt.log"

    def run(**env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        full = {
            **os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "APT_GET": str(apt),
            "BROWSERS": "fakechromium", "LOG": str(log), "BIN": str(bin_dir), **env,
        }  # fmt: skip
        done = subprocess.run([str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        return done, calls

    return run


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the install path runs only as root (or with sudo)")


def test_a_browser_already_there_installs_nothing(fake_apt) -> None:
    done, calls = fake_apt(BROWSERS="sh")
    assert done.returncode == 0 and "chromium found" in done.stdout and calls == []


def test_the_package_lists_are_refreshed_once_when_install_fails(fake_apt) -> None:
    done, calls = fake_apt(FIX_ON_UPDATE="1")
    assert done.returncode == 0, done.stderr
    assert calls == ["install -y -q chromium", "update -q", "install -y -q chromium"]
    assert "chromium installed:" in done.stdout and "fakechromium" in done.stdout


def test_an_install_that_cannot_succeed_says_why_and_does_not_fail(fake_apt) -> None:
    done, calls = fake_apt()
    assert done.returncode == 0, done.stderr
    assert calls == ["install -y -q chromium", "update -q", "install -y -q chromium"]
    assert "could not be installed" in done.stdout and "Unable to locate package chromium" in done.stdout


def test_each_apt_get_call_is_bounded_in_time(fake_apt) -> None:
    done, calls = fake_apt(SLEEP_S="30", BROWSER_INSTALL_TIMEOUT_S="1")
    assert done.returncode == 0, done.stderr
    assert calls == ["install -y -q chromium"]  # timed out: no refresh, no second try
    assert "stopped after 1 s" in done.stdout


def test_no_apt_get_is_a_message_not_a_failure(fake_apt) -> None:
    done, calls = fake_apt(APT_GET="no-such-apt-get")
    assert done.returncode == 0 and "no apt-get here" in done.stdout and calls == []

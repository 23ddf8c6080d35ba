"""`limen start` as a real process for tests: its log (stdout and stderr) and run.json."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.ssh_access import wait_until

LIMEN = [sys.executable, "-m", "limen.cli.main"]


class Running:
    def __init__(self, config: Path, data: Path, log: Path, *flags: str) -> None:
        self.config, self.data, self.log, self.flags = config, data, log, flags
        with log.open("wb") as out:
            self.proc = subprocess.Popen([*LIMEN, "start", "--config", str(config), *flags],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_until(lambda: (data / "run.json").exists() or self.proc.poll() is not None, 60,
                   "limen start to listen")
        assert self.proc.poll() is None, log.read_text()

    def run_file(self) -> dict[str, str]:
        return json.loads((self.data / "run.json").read_text())

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

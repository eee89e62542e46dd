"""Google's Pub/Sub emulator for the tests: ``gcloud beta emulators pubsub start`` on a free port (Java 17).

The emulator is a component of the Google Cloud CLI (``google-cloud-cli-pubsub-emulator`` on Debian, from
Google's apt repository, which CI's machines cannot reach), so a machine without ``gcloud`` or ``java`` skips
these tests, saying so (:func:`tests.programs.require_program`; CI fails instead). It runs in its own process
group, so stopping it ends gcloud's Java child too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

from infra.platform.processes import wait_for_port
from infra.platform.redis_server import free_port
from tests.programs import require_program

START_TIMEOUT_S = 60  # the JVM's start on a busy 2-core machine


class PubSubEmulator:
    def __init__(self) -> None:
        self.gcloud = require_program("gcloud", "the Google Cloud CLI with its pubsub-emulator component")
        require_program("java", "Java 17 for the Pub/Sub emulator, Debian package openjdk-17-jre-headless")
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="wsm-pubsub-")
        self.log = Path(self._dir.name) / "emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The ``PUBSUB_EMULATOR_HOST`` value that points Google's clients here."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> PubSubEmulator:
        data = Path(self._dir.name) / "data"
        data.mkdir()
        argv = [self.gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={self.host}", f"--data-dir={data}"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port, START_TIMEOUT_S, self.proc)
        except (RuntimeError, TimeoutError) as e:
            tail = self.log.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"the Pub/Sub emulator did not start: {e}\n{tail}") from e
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        self._dir.cleanup()

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

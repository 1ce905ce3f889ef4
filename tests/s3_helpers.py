"""A real S3 API on loopback for the tests: moto's server as a subprocess, and a TCP gate in
front of it that can refuse connections for a while (the store "unreachable").

moto runs with authentication on: only the access key created here is accepted, so wrong
credentials are refused as a real store refuses them.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

BUCKET = "recorder-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 and a free port, with one IAM user whose key
    may do anything in S3, and the bucket ``BUCKET``."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.key_id = self.secret = ""

    def start(self, timeout: float = 30.0) -> MotoServer:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _answers(f"{self.url}/moto-api/"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto did not answer within {timeout} s")
            time.sleep(0.05)
        self._setup()
        return self

    def _setup(self) -> None:
        import boto3

        anon = {"endpoint_url": self.url, "aws_access_key_id": "setup",
                "aws_secret_access_key": "setup", "region_name": "us-east-1"}
        iam = boto3.client("iam", **anon)
        iam.create_user(UserName="recorder")
        iam.put_user_policy(UserName="recorder", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="recorder")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        boto3.client("s3", **anon).create_bucket(Bucket=BUCKET)
        # From now on every request must be signed with that key.
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0",
                                     method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=5).read()

    def env(self, endpoint: str | None = None, **more: str) -> dict[str, str]:
        """The environment of a process using the store (``endpoint``: e.g. a gate)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL=endpoint or self.url, AWS_ACCESS_KEY_ID=self.key_id,
                   AWS_SECRET_ACCESS_KEY=self.secret, AWS_REGION="us-east-1",
                   AWS_EC2_METADATA_DISABLED="true")
        env.update(more)
        return env

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``BUCKET/prefix``."""
        import pyarrow.fs as pafs

        from recorder.core.location import StoreURL
        from sinks.object_store import filesystem

        fs = filesystem(StoreURL(BUCKET, prefix), self.env())
        sel = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
        return sorted(i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Gate:
    """A TCP relay 127.0.0.1:port -> target that can be closed (connections refused, open
    ones cut) and opened again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.up()

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.1)
        self._listener = s
        self._stop.clear()
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        self._stop.set()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._stop.is_set():
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto S3 server for the test module (import this fixture where it is used)."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()

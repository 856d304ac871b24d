"""Real servers on 127.0.0.1 for remote shard sets: moto's standalone S3 server and a plain HTTP
file server, both started (and stopped) by the test. Clients reach them the standard way:
``AWS_ENDPOINT_URL`` and credentials in the environment, ``http://127.0.0.1:PORT/`` URLs."""
import functools
import http.server
import os
import threading
import urllib.request
from pathlib import Path

from tests.support.cli import free_port

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}


class S3Server:
    """moto's ThreadedMotoServer; ``env`` points boto3/s3fs at it (set it with monkeypatch)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # moto's backends live in the process, not in the server: a server started by a later
        # test would otherwise find the buckets and objects an earlier test uploaded.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset",
                                                      method="POST"), timeout=30).close()
        self.env = dict(S3_ENV, AWS_ENDPOINT_URL=self.endpoint)

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def upload(self, folder: Path, bucket: str, prefix: str) -> str:
        """Upload every file under ``folder`` to ``s3://bucket/prefix/``; returns that URL."""
        s3 = self.client()
        s3.create_bucket(Bucket=bucket)
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        return f"s3://{bucket}/{prefix}"

    def stop(self) -> None:
        self.server.stop()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet; requests are counted instead
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()


class HttpServer:
    """``ThreadingHTTPServer`` serving ``folder``; ``requests`` lists the GET paths."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_Handler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.requests = []
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self):
        return self.server.requests

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def set_env(monkeypatch, env) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

"""A loopback HTTP server that serves weights files the way the official release does."""
import hashlib
import http.server
import threading

import torch


class WeightsServer:
    """Serves ``root`` on 127.0.0.1 and counts the requests it answers (``requests``)."""

    def __init__(self, root):
        counts = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *_):
                pass

            def do_GET(self):
                counts.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def publish(root, name, state, claimed_hash=None):
    """Write ``state`` as ``root/weights/<name>-<sha256[:8]>.pth`` (the official naming), or
    under ``claimed_hash``; returns the hash in the name."""
    (root / "weights").mkdir(parents=True, exist_ok=True)
    raw = root / "weights" / ".upload.pth"
    torch.save(state, raw)
    prefix = claimed_hash or hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    raw.rename(root / "weights" / f"{name}-{prefix}.pth")
    return prefix

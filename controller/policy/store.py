"""The accepted tenant policies, kept in the state dir so a restarted controller comes back
with exactly what was running.  One JSON file, replaced atomically: either the whole new
policy is on disk or the old one still is."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

FILE = 'tenants.json'


class PolicyStore:
    def __init__(self, state_dir):
        self.dir = Path(state_dir)
        self.path = self.dir / FILE

    def load(self) -> dict[str, dict]:
        """tenant name -> {'source': original file name, 'text': its YAML}."""
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def save(self, docs: dict[str, dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix='.tenants-', suffix='.json')
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(docs, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(self.dir, os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def ensure_token(state_dir) -> str:
    """The API token: created once (mode 0600) in the state dir, required on every call."""
    import secrets
    path = Path(state_dir) / 'api-token'
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(secrets.token_hex(16) + '\n')
    return path.read_text().strip()

"""The accepted tenant policies, kept in the state dir so a restarted controller comes back
with exactly what was running.  One JSON file, replaced atomically: either the whole new
policy is on disk or the old one still is."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from controller.policy.errors import Diag, PolicyError
from controller.policy.yamlsource import excerpt

FILE = 'tenants.json'


RECOVER = ("opendvs will not guess what was running.  To recover: restore the file from a backup, or "
           "move it aside and start with no tenants, then re-apply every tenant with `dvsctl apply` "
           "(README: 'Recovering the state dir')")


class PolicyStore:
    def __init__(self, state_dir):
        self.dir = Path(state_dir)
        self.path = self.dir / FILE

    def load(self) -> dict[str, dict]:
        """tenant name -> {'source': original file name, 'text': its YAML}.  A corrupt or
        truncated file is a PolicyError at its path (and line:col when the JSON says where)."""
        if not self.path.exists():
            return {}
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise self._corrupt(f'cannot read: {e.strerror or e}') from None
        try:
            docs = json.loads(raw.decode('utf-8'))
        except UnicodeDecodeError:
            raise self._corrupt('not UTF-8 text') from None
        except json.JSONDecodeError as e:
            what = 'empty (truncated to 0 bytes)' if not raw.strip() else f'not valid JSON: {e.msg}'
            raise self._corrupt(what, e.lineno, e.colno) from None
        problem = _shape_problem(docs)
        if problem:
            raise self._corrupt(problem)
        return docs

    def _corrupt(self, what: str, line: int = 1, col: int = 1) -> PolicyError:
        return PolicyError([Diag(str(self.path), line, col, f'corrupt state file: {what}. {RECOVER}')])

    def save(self, docs: dict[str, dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix='.tenants-', suffix='.json')
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(docs, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.dir)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _shape_problem(docs) -> str | None:
    if not isinstance(docs, dict):
        return f'expected a JSON object of tenant name -> {{"source", "text"}}, got {type(docs).__name__}'
    for name, doc in docs.items():
        if not isinstance(doc, dict) or set(doc) != {'source', 'text'}:
            return f'tenant {excerpt(name)}: expected an object with exactly "source" and "text"'
        if not all(isinstance(doc[k], str) for k in doc):
            return f'tenant {excerpt(name)}: "source" and "text" must be strings'
    return None


def _fsync_dir(path) -> None:
    dfd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


TOKEN_FILE = 'api-token'


class TokenError(Exception):
    """The API token file exists but must not be used (empty, or readable by others)."""


def ensure_token(state_dir) -> str:
    """The API token, required on every call: created once (mode 0600) in the state dir when
    there is none.  An existing file is used only if it is safe: a regular file, not
    world-accessible nor group-writable, holding one token of at least 16 characters.  (An empty
    file -- left by a start whose write failed -- once meant *no* authentication.)"""
    import secrets
    path = Path(state_dir) / TOKEN_FILE
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_token(path, secrets.token_hex(16))
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise TokenError(f'{path}: not a regular file')
    if st.st_mode & 0o027:
        raise TokenError(f'{path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read or change the '
                         f'API token; run `chmod 600 {path}` (or delete it to have a new token generated)')
    token = path.read_text(errors='replace').strip()
    if not token:
        raise TokenError(f'{path}: empty; delete it and start again to generate a new token')
    if len(token) < 16 or not token.isprintable() or any(c.isspace() for c in token):
        raise TokenError(f'{path}: not a usable token (one word of at least 16 printable characters); '
                         'delete it to have a new one generated')
    return token


def _create_token(path: Path, token: str) -> None:
    """Written in full to a temporary file, then linked into place: the token file either
    does not exist or holds a whole token, and a concurrent start never overwrites one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.api-token-')
    try:
        with os.fdopen(fd, 'w') as f:          # mkstemp: mode 0600
            f.write(token + '\n')
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass                               # another start won the race: use its token
        _fsync_dir(path.parent)
    finally:
        os.unlink(tmp)

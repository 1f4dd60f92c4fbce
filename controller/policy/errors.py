"""Diagnostics: every policy problem is reported as FILE:LINE:COL: message, like a compiler."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, order=True)
class Diag:
    file: str
    line: int        # 1-based
    col: int         # 1-based
    message: str

    def __str__(self) -> str:
        return f'{self.file}:{self.line}:{self.col}: {self.message}'


class PolicyError(Exception):
    """One or more Diags; raised only after every problem in the input has been collected."""

    def __init__(self, diags):
        # Sorted so output reads top to bottom like the file; duplicates add nothing.
        self.diags: list[Diag] = sorted(set(diags))
        # A broken tenant file still names networks, VLANs and MACs: what of it is valid
        # (a model.Tenant, set by tenant_parse) so checks across files can run alongside.
        self.partial = None
        super().__init__('\n'.join(str(d) for d in self.diags))

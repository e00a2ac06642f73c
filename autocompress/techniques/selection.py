"""Choose module groups by role glob and layer range, e.g. ``match: "mlp.*", layers: late``."""

from __future__ import annotations

import fnmatch
import re

from pydantic import BaseModel, ConfigDict, field_validator

from autocompress.models.adapter import LinearSite

_RANGE = re.compile(r"^(\d*)-(\d*)$")


class ModuleSelector(BaseModel):
    """``match`` is a glob over roles (attn.q, attn.k, attn.v, attn.o, mlp.gate, mlp.up, mlp.down);
    ``layers`` is ``early`` (first half), ``late`` (second half), ``A-B`` (inclusive), ``A-`` or ``-B``."""

    model_config = ConfigDict(extra="forbid")

    match: str = "*"
    layers: str | None = None

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, value: str | None) -> str | None:
        if value is None or value in ("early", "late") or value.isdigit() or _RANGE.match(value):
            return value
        raise ValueError("must be 'early', 'late', 'N', 'A-B', 'A-' or '-B'")

    def label(self) -> str:
        """``mlp.*@late`` style name of the selection, for summaries."""
        return self.match + (f"@{self.layers}" if self.layers else "")

    def layer_range(self, num_layers: int) -> range:
        if self.layers is None:
            return range(num_layers)
        if self.layers == "early":
            return range(num_layers // 2)
        if self.layers == "late":
            return range(num_layers // 2, num_layers)
        if self.layers.isdigit():
            return range(int(self.layers), int(self.layers) + 1)
        lo, hi = _RANGE.match(self.layers).groups()
        return range(int(lo or 0), min(int(hi) + 1, num_layers) if hi else num_layers)

    def selects(self, site: LinearSite, num_layers: int) -> bool:
        in_range = site.layer is None or site.layer in self.layer_range(num_layers)
        return in_range and fnmatch.fnmatchcase(site.role, self.match)

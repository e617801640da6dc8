"""The coverage report of one conversion: what was mapped, what was dropped (by group), what not.

Structured data (:class:`Coverage`); :func:`render` writes it for humans, ``asdict`` for ``--json``.
A conversion with anything in ``unmatched`` is an error, never a partial output.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Coverage:
    """mapped: backbone tensors written (count, and values in millions); dropped: group -> tensor
    count; unmatched: keys of the chosen state dict no rule accounts for; ignored_entries: other
    top-level entries of the checkpoint (optimizer, args, ...), not inspected."""

    source_format: str
    where: str
    encoder: str
    mapped: int = 0
    mapped_values_m: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    ignored_entries: list[str] = field(default_factory=list)

    def drop(self, group: str) -> None:
        self.dropped[group] = self.dropped.get(group, 0) + 1


def render(cov: Coverage, arch_name: str, groups: int, config: dict, out: str, seconds: float) -> str:
    """Human-readable report, one fact per line."""
    dropped = ", ".join(f"{g} {n}" for g, n in sorted(cov.dropped.items())) or "nothing"
    lines = [
        f"source     {cov.source_format}: {cov.where} -- {cov.encoder}",
        f"arch       {arch_name}",
        f"mapped     {cov.mapped} backbone tensors ({cov.mapped_values_m:.2f} M values) in {groups} conv groups (all)",
        f"dropped    {dropped}",
        f"unmatched  {len(cov.unmatched) or 'none'}",
    ]
    if cov.ignored_entries:
        lines.append(f"ignored    top-level entries {', '.join(cov.ignored_entries)}")
    lines.append("config     " + "  ".join(f"{k}={v}" for k, v in config.items()))
    lines.append(f"wrote      {out} in {seconds:.2f} s")
    return "\n".join(lines)

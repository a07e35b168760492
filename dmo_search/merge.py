"""Merging experts into a live model, in place.

    theta(w) = theta_0 + sum_i w_i (theta_i - theta_0)          (merge.method: linear, the default)

:class:`InPlaceMerger` plans once which parameters any expert touches (after the per-kind
exclusions), keeps a bit-exact copy of their base values, and per candidate accumulates each
parameter in float32 (LoRA deltas as one ``addmm`` of their stacked factors, never stored dense)
before writing it into the model's existing storage. The merge is memory-bound: off the CPU the first
and last terms' kernels read the base and write the parameter themselves, which saves two passes over
memory (``benchmarks/merge_bandwidth.py``). :meth:`InPlaceMerger.restore` puts the base back bit for
bit.

With another :class:`~dmo_search.merge_methods.MergeMethod` (TIES, DARE, TSV, ISO, WUDI) each
parameter is merged by that method, one parameter at a time: the task vectors that touch it are made
dense (a LoRA delta as ``scale * B @ A``, transient), handed to the method with their weights, and
``theta_0 + delta`` is written in float32. Every method is per parameter in the paper's code, so no
global pass is needed; peak extra memory is the T dense task vectors of the largest parameter plus the
method's scratch (see :mod:`dmo_search.merge_methods` for the time each method costs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dmo_search import simplex
from dmo_search.experts import Delta, DenseDelta, ExpertSet, LowRankDelta
from dmo_search.merge_methods import MergeMethod

__all__ = ["InPlaceMerger", "MergeEntry", "is_excluded", "merged_state"]


def is_excluded(name: str, patterns: Sequence[str]) -> bool:
    """True when parameter ``name`` contains any of ``patterns`` (the paper's substring rule)."""
    return any(p in name for p in patterns)


@dataclass
class MergeEntry:
    """One parameter of the plan: the live tensor, its base copy and the expert terms."""

    name: str
    param: torch.Tensor
    base: torch.Tensor
    terms: list[tuple[int, Delta]]
    # Every expert's term, fused or not, for the non-linear methods.
    all_terms: list[tuple[int, Delta]] = field(default_factory=list)
    # LoRA terms fused into one product: sum_i w_i s_i B_i A_i = [w_1 s_1 B_1 | ...] @ [A_1; ...]
    lowrank_idx: list[int] = field(default_factory=list)
    a_cat: torch.Tensor | None = None
    b_cat: torch.Tensor | None = None
    lowrank: list[LowRankDelta] = field(default_factory=list)

    def fuse(self) -> None:
        """Stack the LoRA factors once so each candidate costs a single matmul per parameter."""
        self.all_terms = list(self.terms)
        lr = [(i, d) for i, d in self.terms if isinstance(d, LowRankDelta) and not d.transpose]
        if len(lr) < 2:
            return
        self.lowrank_idx = [i for i, _ in lr]
        self.a_cat = torch.cat([d.A for _, d in lr], dim=0)
        self.b_cat = torch.empty(
            lr[0][1].B.shape[0], self.a_cat.shape[0], dtype=torch.float32, device=self.a_cat.device
        )
        self.terms = [(i, d) for i, d in self.terms if i not in self.lowrank_idx]
        self.lowrank = [d for _, d in lr]

    def has_lowrank(self, w: Sequence[float]) -> bool:
        """True when a fused LoRA expert has a non-zero weight in ``w``."""
        return self.a_cat is not None and any(w[i] != 0.0 for i in self.lowrank_idx)

    def lowrank_into(self, acc: torch.Tensor, w: Sequence[float], *, overwrite: bool) -> None:
        """``acc += [w_i s_i B_i] @ [A_i]`` over the fused LoRA experts; ``acc = ...`` when ``overwrite``
        (acc's old contents are then not read)."""
        assert self.a_cat is not None and self.b_cat is not None
        col = 0
        for i, d in zip(self.lowrank_idx, self.lowrank, strict=True):
            r = d.rank
            torch.mul(d.B, w[i] * d.scale, out=self.b_cat[:, col : col + r])
            col += r
        acc.addmm_(self.b_cat, self.a_cat, beta=0.0 if overwrite else 1.0)


class InPlaceMerger:
    """Writes ``theta(w)`` into ``model`` for any mixture ``w``; restores the base exactly.

    Args:
        model: the live base model (its parameters are overwritten in place).
        experts: the experts, validated against ``model`` (:func:`~dmo_search.experts.load_expert_set`).
        exclude_lora: name patterns kept at base values for LoRA experts.
        exclude_full: name patterns kept at base values for full fine-tune experts.
        method: the merge method; default linear (:class:`~dmo_search.merge_methods.MergeMethod`).
        fused: the linear merge's kernel sequence: True reads the base and writes the parameter inside
            the first and last terms' kernels (fewer passes over memory: 1.1-1.5x faster on an H200,
            ``benchmarks/merge_bandwidth.py``); False starts from a float32 copy of the base and copies
            the sum back (on a CPU, where torch's mixed-dtype kernels make such copies as temporaries,
            the fused sequence ran at 0.24x dense and 0.71x LoRA in bfloat16, 0.45x dense in float32).
            Default: True off the CPU. Both give the same merge up to float32 rounding order.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        experts: ExpertSet,
        *,
        exclude_lora: Sequence[str] = (),
        exclude_full: Sequence[str] = (),
        method: MergeMethod | None = None,
        fused: bool | None = None,
    ) -> None:
        self.experts = experts
        self.method = method or MergeMethod()
        params = dict(model.named_parameters())
        if fused is None:
            fused = any(p.device.type != "cpu" for p in params.values())
        self.fused = fused
        entries: dict[str, MergeEntry] = {}
        self.excluded: set[str] = set()
        for i, expert in enumerate(experts.experts):
            patterns = exclude_lora if expert.kind == "lora" else exclude_full
            for name, delta in expert.deltas.items():
                if is_excluded(name, patterns):
                    self.excluded.add(name)
                    continue
                if name not in entries:
                    p = params[name]
                    entries[name] = MergeEntry(name, p, p.detach().clone(), [])
                entries[name].terms.append((i, delta))
        self.entries = list(entries.values())
        for entry in self.entries:
            entry.fuse()
        self._scratch: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        self.current: list[float] | None = None

    @property
    def n_domains(self) -> int:
        """K."""
        return len(self.experts)

    def set_method(self, method: MergeMethod | None) -> None:
        """Merge with ``method`` (default linear) from the next :meth:`apply` on; the plan, the base
        copies and the experts stay (a method is only read when a mixture is applied)."""
        self.method = method or MergeMethod()

    def _buffer(self, entry: MergeEntry) -> torch.Tensor:
        """A float32 scratch tensor of ``entry``'s shape (one per shape and device, reused)."""
        key = (tuple(entry.base.shape), entry.base.device)
        buf = self._scratch.get(key)
        if buf is None:
            buf = torch.empty(entry.base.shape, dtype=torch.float32, device=entry.base.device)
            self._scratch[key] = buf
        return buf

    def _acc(self, entry: MergeEntry) -> torch.Tensor:
        return self._buffer(entry).copy_(entry.base)

    def _apply_linear(self, entry: MergeEntry, w: Sequence[float]) -> None:
        """``param = base + sum_i w_i delta_i``, accumulated in float32 in as few passes over memory as the
        terms allow (the merge is memory-bound: ``benchmarks/merge_bandwidth.py``)."""
        terms = [(w[i], d) for i, d in entry.terms if w[i] != 0.0]
        lowrank = entry.has_lowrank(w)
        if not self.fused:
            acc = self._acc(entry)
            if lowrank:
                entry.lowrank_into(acc, w, overwrite=False)
            for wi, d in terms:
                d.add_to(acc, wi)
            entry.param.copy_(acc)
            return
        if not lowrank and all(isinstance(d, DenseDelta) for _, d in terms):
            # dense task vectors only: base + w_1 d_1 -> acc, acc += ..., acc + w_T d_T -> parameter
            if not terms:
                entry.param.copy_(entry.base)
                return
            if len(terms) == 1:
                torch.add(entry.base, terms[0][1].dense(), alpha=terms[0][0], out=entry.param)
                return
            acc = self._buffer(entry)
            torch.add(entry.base, terms[0][1].dense(), alpha=terms[0][0], out=acc)
            for wi, d in terms[1:-1]:
                d.add_to(acc, wi)
            torch.add(acc, terms[-1][1].dense(), alpha=terms[-1][0], out=entry.param)
            return
        # a low-rank term: the delta sum in acc (written, not read, first), then parameter = base + acc
        acc = self._buffer(entry)
        if lowrank:
            entry.lowrank_into(acc, w, overwrite=True)
        for n, (wi, d) in enumerate(terms):
            d.add_to(acc, wi, overwrite=n == 0 and not lowrank)
        torch.add(entry.base, acc, out=entry.param)

    @torch.no_grad()
    def apply(self, weights: Sequence[float]) -> None:
        """Write ``theta(w)`` into the model (each parameter accumulated in float32)."""
        w = simplex.check_weights(weights, self.n_domains)
        if not self.method.is_linear:
            for entry in self.entries:
                acc = self._acc(entry)
                acc.add_(_method_delta(self.method, entry.name, entry.base, entry.all_terms, w))
                entry.param.copy_(acc)
            self.current = w
            return
        for entry in self.entries:
            self._apply_linear(entry, w)
        self.current = w

    @torch.no_grad()
    def restore(self) -> None:
        """Put every merged parameter back to its base value, bit for bit."""
        for entry in self.entries:
            entry.param.copy_(entry.base)
        self.current = None

    def nbytes(self) -> int:
        """Extra memory the merger holds: base copies plus the experts' deltas."""
        return sum(e.base.nbytes for e in self.entries) + sum(x.nbytes() for x in self.experts.experts)


def _method_delta(
    method: MergeMethod, name: str, base: torch.Tensor, terms: Sequence[tuple[int, Delta]], w: Sequence[float]
) -> torch.Tensor:
    """One parameter's merged delta under ``method``: its experts' dense task vectors (fp32), weighted."""
    present = [(i, d) for i, d in terms if w[i] != 0.0]
    if not present:
        return torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    taus = [d.dense().to(device=base.device, dtype=torch.float32) for _, d in present]
    return method.merge(base, taus, [w[i] for i, _ in present], key=name, ids=[i for i, _ in present])


def merged_state(
    base: dict[str, torch.Tensor],
    experts: ExpertSet,
    weights: Sequence[float],
    *,
    exclude_lora: Sequence[str] = (),
    exclude_full: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    method: MergeMethod | None = None,
) -> dict[str, torch.Tensor]:
    """Out-of-place reference: ``theta(w)`` as a new state dict computed in ``dtype`` (float32 for a
    non-linear ``method``)."""
    w = simplex.check_weights(weights, len(experts))
    if method is not None and not method.is_linear:
        terms: dict[str, list[tuple[int, Delta]]] = {}
        for i, expert in enumerate(experts.experts):
            patterns = exclude_lora if expert.kind == "lora" else exclude_full
            for name, delta in expert.deltas.items():
                if not is_excluded(name, patterns):
                    terms.setdefault(name, []).append((i, delta))
        merged = {k: v.to(torch.float32).clone() for k, v in base.items()}
        for name, ts in terms.items():
            merged[name] += _method_delta(method, name, merged[name], ts, w)
        return merged
    out = {k: v.to(dtype).clone() for k, v in base.items()}
    for i, expert in enumerate(experts.experts):
        patterns = exclude_lora if expert.kind == "lora" else exclude_full
        for name, delta in expert.deltas.items():
            if not is_excluded(name, patterns):
                out[name] += w[i] * delta.dense().to(dtype)
    return out

"""Merge methods beyond the linear merge, as pure functions on one parameter's tensors.

Each method takes the base tensor ``base`` (shape ``*S``), the experts' task vectors ``taus`` (each
``*S``, float32) and the mixture weights ``w`` (one per task vector) and returns the merged *delta*
(``*S``, float32), so ``theta = base + delta``. The mixture enters as in the linear merge: expert i's
task vector is scaled by ``w_i`` before the method sees it, and an expert with ``w_i = 0`` takes no
part (the paper's code drops experts without data from the composition). Inputs are never modified.

References (definitions and defaults):
    The paper's public code ``model_merging.py`` in BerasiDavide/mLLMs_merging_4_DMO, adapted from
    WalkerWorldPeace/MLLMerging ``LLaMA-Factory/model_merging.py`` (OptMerge), which implements
    TIES (Yadav et al., 2023), DARE (Yu et al., 2024), TSV-Merge (Gargiulo et al., 2025), ISO-C
    (Marczak et al., 2025) and WUDI v1/v2 (Cheng et al., 2025). Departures are named in each docstring.

NOTE on w: the paper's code passes the mixture ratios only to task arithmetic (and Fisher merging);
its other methods merge the unscaled task vectors of the experts present. Here every method sees
``w_i * tau_i``, which makes each method a proxy parameterised by the mixture.

Costs per parameter of shape ``m x n`` with T experts present (a candidate re-runs all of it; the
in-place merger densifies LoRA task vectors, so T dense ``m x n`` float32 copies live at once):
    ties, dare_*: O(T m n) time (a ``kthvalue`` per task vector), ~3 T m n floats of scratch.
    tsv: T + 2 thin SVDs, O(T m n min(m, n)); scratch ~ (T + 2) (m + n) min(m, n) floats.
    iso: one thin SVD of the sum, O(m n min(m, n)).
    wudi: ``steps`` Adam steps, each O(T m^2 n) (forward + backward ~3x); scratch T m^2 floats.
    wudi2: T thin SVDs then ``steps`` SGD steps of O(T m n k), k = min(m, n) / T.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from dmo_search.merge_params import METHOD_PARAMS, ParamValue, resolve_params

if TYPE_CHECKING:
    from dmo_search.config import MergeConfig

__all__ = [
    "MergeMethod",
    "dare_linear",
    "dare_ties",
    "iso",
    "linear",
    "method_seeds",
    "ties",
    "tsv",
    "wudi",
    "wudi2",
]


def _present(taus: Sequence[torch.Tensor], w: Sequence[float]) -> list[tuple[int, torch.Tensor]]:
    """``(position, w_i * tau_i)`` for the experts with a non-zero weight, in float32."""
    if len(taus) != len(w):
        raise ValueError(f"got {len(taus)} task vectors but {len(w)} weights; pass one weight per task vector")
    return [(j, t.to(torch.float32) * float(x)) for j, (t, x) in enumerate(zip(taus, w, strict=True)) if x != 0.0]


def _mean(vs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(vs)).mean(dim=0)


def linear(base: torch.Tensor, taus: Sequence[torch.Tensor], w: Sequence[float]) -> torch.Tensor:
    """Task arithmetic: ``sum_i w_i tau_i`` (the paper's default; ``task_arithmetic`` in the reference)."""
    out = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for _, v in _present(taus, w):
        out += v
    return out


# --------------------------------------------------------------------------------------------- TIES
def _trim(v: torch.Tensor, mask_rate: float) -> torch.Tensor:
    """Zero the smallest-magnitude entries: keep ``|v| >= `` the ``int(numel * mask_rate)``-th smallest ``|v|``.

    As ``mask_smallest_magnitude_param_values`` in the reference (per tensor, ``>=``, so the k-th value
    itself and ties with it are kept). With ``int(numel * mask_rate) == 0`` nothing is masked.
    """
    k = int(v.numel() * mask_rate)
    if k == 0:
        return v.clone()
    kth = v.abs().reshape(-1).kthvalue(k).values
    return v * (v.abs() >= kth)


def _ties_merge(vs: Sequence[torch.Tensor], mask_rate: float) -> torch.Tensor:
    trimmed = [_trim(v, mask_rate) for v in vs]
    total = torch.stack(trimmed).sum(dim=0)
    signs = torch.sign(total)
    zero = signs == 0
    if bool(zero.any()):  # reference: elected zeros take the sign of the sum of the elected signs
        signs[zero] = torch.sign(signs.sum())
    kept_sum = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for t in trimmed:
        keep = ((signs > 0) & (t > 0)) | ((signs < 0) & (t < 0))
        kept = t * keep
        kept_sum += kept
        count += (kept != 0).to(torch.float32)
    return kept_sum / count.clamp(min=1.0)


def ties(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    mask_rate: float = 0.8,
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """TIES: trim each task vector to its top ``1 - mask_rate`` magnitudes, elect a sign per entry
    (sign of the trimmed sum), average the entries that agree with it (disjoint mean).

    Reference ``ties_merging`` (``param_value_mask_rate=0.8``, ``scaling_coefficient=1.0``): trimming is
    per parameter tensor, not over the whole model as in the TIES paper.
    """
    vs = [v for _, v in _present(taus, w)]
    if not vs:
        return torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    return scaling_coefficient * _ties_merge(vs, mask_rate)


# --------------------------------------------------------------------------------------------- DARE
def method_seeds(seed: int, key: str, ids: Sequence[int]) -> list[int]:
    """One RNG seed per task vector, from the method seed, the parameter name and the expert's index.

    Independent of the mixture and of the order parameters are merged in, so every candidate drops
    the same entries of a given expert's task vector (common random numbers across candidates).
    """
    out = []
    for i in ids:
        h = hashlib.sha256(f"{seed}:{key}:{i}".encode()).digest()
        out.append(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return out


def _dare(v: torch.Tensor, drop_rate: float, rescale: bool, seed: int) -> torch.Tensor:
    """Drop each entry with probability ``drop_rate`` and rescale the rest by ``1 / (1 - drop_rate)``.

    The mask is drawn on the CPU from ``seed`` whatever the device, so both backends drop the same entries.
    """
    g = torch.Generator().manual_seed(seed)
    drop = (torch.rand(v.shape, generator=g) < drop_rate).to(v.device)
    out = v.masked_fill(drop, 0.0)
    if rescale and drop_rate != 1.0:
        out = out / (1.0 - drop_rate)
    return out


def dare_linear(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    seeds: Sequence[int],
    drop_rate: float = 0.2,
    rescale: bool = True,
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """DARE then task arithmetic: ``sum_i w_i DARE(tau_i)``.

    Reference ``dare_ta``: ``mask_input_with_mask_rate`` with ``weight_mask_rate=0.2``,
    ``use_rescale=True``, ``mask_strategy="random"``. ``seeds[i]`` seeds task vector i's mask.
    """
    if len(seeds) != len(taus):
        raise ValueError(f"dare needs one seed per task vector, got {len(seeds)} for {len(taus)}")
    out = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for j, v in _present(taus, w):
        out += _dare(v, drop_rate, rescale, seeds[j])
    return scaling_coefficient * out


def dare_ties(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    seeds: Sequence[int],
    drop_rate: float = 0.2,
    rescale: bool = True,
    mask_rate: float = 0.8,
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """DARE on each task vector, then TIES (reference ``dare_ties``: drop 0.2, then TIES mask 0.8)."""
    if len(seeds) != len(taus):
        raise ValueError(f"dare needs one seed per task vector, got {len(seeds)} for {len(taus)}")
    vs = [_dare(v, drop_rate, rescale, seeds[j]) for j, v in _present(taus, w)]
    if not vs:
        return torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    return scaling_coefficient * _ties_merge(vs, mask_rate)


# ---------------------------------------------------------------------------------------- SVD-based
def tsv(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    key: str = "",
    scope: str = "all_2d",
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """TSV-Merge: keep each task vector's top ``k = int(min(m, n) / T)`` singular triplets, stack the
    T left (right) singular bases side by side, orthogonalise each stack by its polar factor
    ``U_u V_u^T`` (``U_v V_v^T``) and recombine with the kept singular values.

    Reference ``svd_merging`` (``sv_reduction = 1 / T``). The reference applies this to
    ``lm_head.weight`` only and averages every other parameter (so in LoRA mode, where ``lm_head`` is
    excluded, its ``svd`` is the mean of the task vectors); ``scope="lm_head"`` reproduces that.
    The default ``scope="all_2d"`` applies TSV to every 2-D parameter, as in the TSV paper; other
    parameters (and 2-D ones with ``T > min(m, n)``) get the reference's fallback, the mean.

    Cost: T + 2 thin SVDs per 2-D parameter and candidate (see the module docstring).
    """
    vs = [v for _, v in _present(taus, w)]
    if not vs:
        return torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    use_svd = base.dim() == 2 and (scope == "all_2d" or key == "lm_head.weight")
    n_tasks = len(vs)
    r = min(base.shape) if base.dim() == 2 else 0
    k = int(r * (1.0 / n_tasks))
    if not use_svd or k == 0:
        return scaling_coefficient * _mean(vs)
    m, n = base.shape
    sum_u = torch.zeros(m, r, dtype=torch.float32, device=base.device)
    sum_s = torch.zeros(r, dtype=torch.float32, device=base.device)
    sum_v = torch.zeros(r, n, dtype=torch.float32, device=base.device)
    for i, v in enumerate(vs):
        u, s, vh = torch.linalg.svd(v, full_matrices=False)
        sum_u[:, i * k : (i + 1) * k] = u[:, :k]
        sum_s[i * k : (i + 1) * k] = s[:k]
        sum_v[i * k : (i + 1) * k, :] = vh[:k, :]
    u_u, _, vh_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, _, vh_v = torch.linalg.svd(sum_v, full_matrices=False)
    merged = torch.linalg.multi_dot([u_u, vh_u, torch.diag(sum_s), u_v, vh_v])
    return scaling_coefficient * merged


def iso(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """ISO-C: the sum of the task vectors with its spectrum flattened, ``U diag(mean(s)) V^T``.

    Reference ``iso_merging`` (ISO-C; ISO-CTS is not in the reference and not here). The reference
    calls the SVD on every merged parameter, which fails on 1-D ones; here non-2-D parameters get the
    plain sum. Cost: one thin SVD of an ``m x n`` matrix per 2-D parameter and candidate.
    """
    total = linear(base, taus, w)
    if base.dim() != 2:
        return scaling_coefficient * total
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return scaling_coefficient * ((u * s.mean()) @ vh)


def _optimise(
    x0: torch.Tensor,
    loss_fn: Any,
    *,
    steps: int,
    make_opt: Any,
) -> torch.Tensor:
    """Minimise ``loss_fn(x)`` from ``x0`` for ``steps`` steps; works inside no_grad / inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.nn.Parameter(x0.clone())
        opt = make_opt([x])
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(x)
            loss.backward()
            opt.step()
        return x.detach().clone()


def wudi(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    key: str = "",
    steps: int = 300,
    lr: float = 1e-5,
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """WUDI v1: from ``tau_m = sum_i tau_i``, ``steps`` Adam steps (``lr``) on
    ``sum_i ||(tau_m - tau_i) tau_i^T||_F^2 / ||tau_i||_F^2`` (interference of the merge with each task).

    Reference ``wudi_merging`` (``iter_num=300``, Adam ``lr=1e-5``), for 2-D parameters whose name
    lacks ``lm_head``; the others get the reference's fallback, the mean of the task vectors. A task
    vector that is exactly zero adds no term (the reference would divide by zero).
    Cost: ``steps`` x O(T m^2 n) per parameter and candidate; on a CPU lower ``steps`` for real models.
    """
    vs = [v for _, v in _present(taus, w)]
    if not vs:
        return torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    if base.dim() != 2 or "lm_head" in key:
        return scaling_coefficient * _mean(vs)
    with torch.inference_mode(False):
        terms = [(v.clone(), float(v.square().sum())) for v in vs]
    terms = [(v, n2) for v, n2 in terms if n2 > 0]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return sum((((x - v) @ v.T).square().sum() / n2 for v, n2 in terms), torch.zeros((), device=x.device))

    x = _optimise(torch.stack(vs).sum(dim=0), loss, steps=steps, make_opt=lambda p: torch.optim.Adam(p, lr=lr))
    return scaling_coefficient * x


def wudi2(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    w: Sequence[float],
    *,
    key: str = "",
    steps: int = 300,
    lr: float = 1e-4,
    momentum: float = 0.9,
    scaling_coefficient: float = 1.0,
) -> torch.Tensor:
    """WUDI v2: with each task vector's rank-``k`` truncation ``tau_i^k = U_k S_k V_k^T``
    (``k = int(min(m, n) / T)``) and ``L_i = S_k V_k^T``, from the mean of the task vectors, ``steps``
    SGD steps (``lr``, ``momentum``) on ``sum_i ||(tau_m - tau_i^k) L_i^T||_F^2 / ||tau_i||_F^2``.

    Reference ``wudi_merging2`` (``iter_num=300``, SGD ``lr=1e-4``, ``momentum=0.9``; its zero-padded
    ``S_matrix @ v`` equals ``L_i`` up to zero rows, which add nothing to the loss), for 2-D parameters
    whose name lacks ``lm_head``; the others get the mean. Cost: T thin SVDs plus ``steps`` x
    O(T m n k) per parameter and candidate.
    """
    vs = [v for _, v in _present(taus, w)]
    if not vs:
        return torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    if base.dim() != 2 or "lm_head" in key:
        return scaling_coefficient * _mean(vs)
    k = int(min(base.shape) / len(vs))
    terms = []
    with torch.inference_mode(False):
        for v in vs:
            n2 = float(v.square().sum())
            if n2 == 0:
                continue
            u, s, vh = torch.linalg.svd(v, full_matrices=False)
            low = s[:k, None] * vh[:k]
            terms.append(((u[:, :k] * s[:k]) @ vh[:k], low, n2))

    def loss(x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), device=x.device)
        return sum((((x - tk) @ low.T).square().sum() / n2 for tk, low, n2 in terms), zero)

    x = _optimise(
        _mean(vs),
        loss,
        steps=steps,
        make_opt=lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum),
    )
    return scaling_coefficient * x


# ------------------------------------------------------------------------------------- the method
@dataclass(frozen=True)
class MergeMethod:
    """A merge method with its resolved hyper-parameters and seed (see :mod:`dmo_search.merge_params`).

    Build it with :meth:`create` (which validates ``params``); :meth:`merge` applies it to one parameter.

    Example:
        >>> import torch
        >>> m = MergeMethod.create("ties", {"mask_rate": 0.5})
        >>> m.merge(torch.zeros(2), [torch.tensor([1.0, -3.0]), torch.tensor([2.0, 1.0])], [1.0, 1.0]).tolist()
        [1.5, -3.0]
    """

    name: str = "linear"
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def create(cls, name: str = "linear", params: Mapping[str, object] | None = None, seed: int = 0) -> MergeMethod:
        """Validate ``params`` against ``name``'s (raises ``ValueError`` naming the allowed ones)."""
        return cls(name=name, params=resolve_params(name, params), seed=int(seed))

    @classmethod
    def from_config(cls, merge: MergeConfig) -> MergeMethod:
        """The method a study config's ``merge`` section names."""
        return cls.create(merge.method, merge.params, merge.seed)

    @property
    def is_linear(self) -> bool:
        """True for the plain linear merge (the in-place merger's fast low-rank path applies)."""
        return self.name == "linear"

    def to_json(self) -> str:
        """JSON for crossing a process boundary (vLLM's ``collective_rpc``)."""
        return json.dumps({"name": self.name, "params": dict(self.params), "seed": self.seed})

    @classmethod
    def from_json(cls, text: str) -> MergeMethod:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls.create(d["name"], d["params"], d["seed"])

    def merge(
        self,
        base: torch.Tensor,
        taus: Sequence[torch.Tensor],
        w: Sequence[float],
        *,
        key: str = "",
        ids: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """The merged delta for one parameter.

        Args:
            base: the base tensor (``*S``); only its shape, dimension and device are used.
            taus: the task vectors (each ``*S``) of the experts that touch this parameter.
            w: their mixture weights, one per task vector.
            key: the parameter's name (seeds DARE; selects ``lm_head`` handling in tsv / wudi).
            ids: the experts' indices in the study (seeds DARE); default ``0..len(taus)-1``.
        """
        p: dict[str, Any] = dict(self.params)
        name = self.name
        if name not in METHOD_PARAMS:
            raise ValueError(f"unknown merge method {name!r}; choose one of {list(METHOD_PARAMS)}")
        if name == "linear":
            return linear(base, taus, w)
        if name == "ties":
            return ties(base, taus, w, **p)
        if name in ("dare_linear", "dare_ties"):
            seeds = method_seeds(self.seed, key, list(range(len(taus))) if ids is None else ids)
            fn = dare_linear if name == "dare_linear" else dare_ties
            return fn(base, taus, w, seeds=seeds, **p)
        if name == "tsv":
            return tsv(base, taus, w, key=key, **p)
        if name == "iso":
            return iso(base, taus, w, **p)
        if name == "wudi":
            return wudi(base, taus, w, key=key, **p)
        return wudi2(base, taus, w, key=key, **p)

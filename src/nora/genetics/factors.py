"""Small pure tensor functions over LoRA factors, the building blocks of crossover and mutation.

Every function is deterministic given its inputs; the random ones take an explicit
``torch.Generator`` and never touch the global RNG. Factors follow PEFT: ``A`` is ``(rank, in)`` and
``B`` is ``(out, rank)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_rank_rows(a: torch.Tensor, rank: int) -> torch.Tensor:
    """Zero-pad ``A`` (``r x in``) with rows up to ``rank``.

    Args:
        a: an ``A`` factor with ``r <= rank`` rows.
        rank: the target number of rows.

    Returns:
        ``A`` with ``rank - r`` zero rows appended.
    """
    return torch.nn.functional.pad(a, (0, 0, 0, rank - a.shape[0]))


def pad_rank_columns(b: torch.Tensor, rank: int) -> torch.Tensor:
    """Zero-pad ``B`` (``out x r``) with columns up to ``rank``."""
    return torch.nn.functional.pad(b, (0, rank - b.shape[1]))


def low_rank_sum(
    bs: Sequence[torch.Tensor],
    as_: Sequence[torch.Tensor],
    weights: Sequence[float],
    rank: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factor ``sum_i w_i * B_i @ A_i`` without forming the dense ``out x in`` matrix.

    Stacks ``[w_1 B_1, ..., w_n B_n]`` (``out x R``) and ``[A_1; ...; A_n]`` (``R x in``), takes the QR
    decomposition of each side, and the SVD of the small ``R x R`` core ``R_B R_A^T``. Cost is
    ``O((in + out) R^2)`` with ``R = sum_i r_i``. Keeping all ``R`` components is exact; keeping the
    top ``rank`` gives the best rank-``rank`` approximation (Eckart-Young), as a dense truncated SVD would.

    Args:
        bs: ``B_i`` factors, each ``out x r_i``.
        as_: ``A_i`` factors, each ``r_i x in``.
        weights: ``w_i``, including any LoRA scaling.
        rank: components to keep; ``None`` keeps ``min(R, in, out)``.

    Returns:
        ``(U, S, Vh)`` with ``U`` ``out x k`` and ``Vh`` ``k x in`` orthonormal, ``S`` the ``k`` singular
        values in descending order: the sum equals ``U @ diag(S) @ Vh``.
    """
    stacked_b = torch.cat([w * b.float() for w, b in zip(weights, bs, strict=True)], dim=1)
    stacked_a = torch.cat([a.float() for a in as_], dim=0)
    q_b, r_b = torch.linalg.qr(stacked_b)
    q_a, r_a = torch.linalg.qr(stacked_a.T)
    u_core, singular, vh_core = torch.linalg.svd(r_b @ r_a.T)
    keep = min(singular.shape[0], rank if rank is not None else singular.shape[0])
    return q_b @ u_core[:, :keep], singular[:keep], vh_core[:keep] @ q_a.T


def split_singular_values(
    u: torch.Tensor, singular: torch.Tensor, vh: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn an SVD into LoRA factors with ``scale * B @ A = U diag(S) Vh``.

    The singular values are split evenly (``sqrt(S)`` on each side) so both factors have equal norms,
    which keeps them well conditioned for further training.

    Returns:
        ``(A, B)``: ``A`` is ``k x in``, ``B`` is ``out x k``.
    """
    root = (singular / scale).sqrt()
    return root[:, None] * vh, u * root[None, :]


def random_coefficients_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform ``(0, 1)`` coefficients of ``tensor``'s shape (NoRA's ``C`` matrices), in float32."""
    return torch.rand(tensor.shape, generator=generator)


def random_keep_mask(tensor: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """A Bernoulli(``density``) mask of ``tensor``'s shape: PEFT's ``random_pruning`` with our generator."""
    return torch.bernoulli(torch.full(tensor.shape, density), generator=generator)


def dare_prune(tensor: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Drop-and-rescale (DARE): keep each entry with probability ``density`` and divide by ``density``."""
    return tensor * random_keep_mask(tensor, density, generator) / density


def slerp(t: float, first: torch.Tensor, second: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation between two same-shape tensors, treated as flat vectors.

    Args:
        t: 0 gives ``first``, 1 gives ``second``.
        first: one end point.
        second: the other end point.
        eps: below this angle the two are (anti-)parallel enough that linear interpolation is used.

    Returns:
        The interpolated tensor in float32.
    """
    x, y = first.float().flatten(), second.float().flatten()
    norm_x, norm_y = x.norm(), y.norm()
    if norm_x < eps or norm_y < eps:
        return ((1 - t) * x + t * y).view(first.shape)
    cosine = torch.clamp(torch.dot(x / norm_x, y / norm_y), -1.0, 1.0)
    angle = torch.arccos(cosine)
    if angle.abs() < eps or (torch.pi - angle).abs() < eps:
        return ((1 - t) * x + t * y).view(first.shape)
    sine = torch.sin(angle)
    mixed = (torch.sin((1 - t) * angle) / sine) * x + (torch.sin(t * angle) / sine) * y
    return mixed.view(first.shape)


def blend_alpha(tensors: Sequence[torch.Tensor], alpha: float, generator: torch.Generator) -> torch.Tensor:
    """BLX-alpha: each entry drawn uniformly from ``[min - alpha*I, max + alpha*I]``, ``I = max - min``.

    Args:
        tensors: same-shape parent tensors.
        alpha: how far beyond the parents' range children may fall (0 stays inside it).
        generator: the only source of randomness.

    Returns:
        The child tensor in float32.
    """
    stacked = torch.stack([t.float() for t in tensors])
    low, high = stacked.min(dim=0).values, stacked.max(dim=0).values
    spread = high - low
    u = torch.rand(low.shape, generator=generator)
    return (low - alpha * spread) + u * (1 + 2 * alpha) * spread


def gaussian_gene_noise(
    tensor: torch.Tensor, sigma: float, gene_probability: float, generator: torch.Generator
) -> torch.Tensor:
    """GENOME's gene mutation: ``theta + N(0, sigma^2) * mask`` with ``mask ~ Bernoulli(p)`` per entry."""
    noise = torch.randn(tensor.shape, generator=generator) * sigma
    if gene_probability < 1.0:
        noise *= random_keep_mask(tensor, gene_probability, generator)
    return tensor.float() + noise


def component_energy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||B[:, i]|| * ||A[i, :]||`` for every component ``i``: its contribution to ``B @ A``."""
    energy: torch.Tensor = b.float().norm(dim=0) * a.float().norm(dim=1)
    return energy


def update_frobenius_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||B @ A||_F`` from ``r x r`` Gram matrices, without the dense product."""
    a32, b32 = a.float(), b.float()
    return float(torch.sqrt(torch.clamp(torch.sum((a32 @ a32.T) * (b32.T @ b32)), min=0.0)))

"""DeepWalk positional encoding in pure torch (method §4.7, §10.1 item 14, §10.2).

The reference builds a networkx graph, walks it in Python with one worker and trains gensim's
Word2Vec on the walks. Here the walks are one tensor op per step over a CSR adjacency (no
pyg-lib or torch-cluster needed) and the skip-gram model is two embedding tables trained with
negative sampling on the same device as the graph.

Deviations from the reference, all deliberate:

* Word2Vec is replaced by a torch skip-gram with negative sampling only (5 noise nodes from the
  unigram^0.75 distribution, gensim's shrinking window, self-pairs of a noise draw masked out);
  gensim 4.1.2 ran hierarchical softmax *and* negative sampling, frequent-word downsampling
  (``sample=1e-3``) and linearly decaying SGD, none of which is reproduced. The embeddings are
  therefore not numerically those of the reference, only the same kind of embedding.
* A walk that reaches a node without out-neighbours stops in the reference. Here the walker stays
  on that node so the walk tensor stays rectangular, and :func:`walk_mask` marks the padded
  positions, which contribute no skip-gram pairs and no unigram counts: the training signal is
  that of the reference's shortened walks.
* Duplicate edges are merged before walking (networkx keeps one neighbour per node pair).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEEPWALK_VERSION",
    "deepwalk",
    "edge_index_to_csr",
    "impute_heldout",
    "random_walks",
    "train_skipgram",
    "walk_mask",
]

# Bump when the walk or skip-gram code changes what it computes: old cache entries then miss.
DEEPWALK_VERSION = 1


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1; pass a positive integer")


def edge_index_to_csr(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Turn an edge list into a duplicate-free CSR adjacency of out-neighbours.

    Args:
        edge_index: source and target node of every edge, shape (2, E), integer.
        num_nodes: N; every index must lie in [0, N).

    Returns:
        ``rowptr`` of shape (N + 1,) and ``col`` of shape (E',) with E' <= E: the out-neighbours
        of node ``u`` are ``col[rowptr[u]:rowptr[u + 1]]``, sorted. Self-loops are kept.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    _positive(num_nodes=num_nodes)
    edge_index = edge_index.long()
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge_index holds node ids outside [0, {num_nodes}); fix num_nodes")
    # One sort both merges duplicates and orders edges by source (N^2 < 2^63 for any real graph).
    key = torch.unique(edge_index[0] * num_nodes + edge_index[1])
    row, col = key // num_nodes, key % num_nodes
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
    rowptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_nodes), 0)
    return rowptr, col


def random_walks(
    rowptr: Tensor,
    col: Tensor,
    *,
    num_walks: int,
    walk_length: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniform random walks (node2vec with p = q = 1) for every node, all walkers at once (§4.7).

    Walks start from ``num_walks`` passes over all nodes, each pass in a fresh random order. A
    walker on a node without out-neighbours stays there (the reference would stop the walk; see
    :func:`walk_mask`). A self-loop lets a walker stay put, as in the reference.

    Args:
        rowptr: CSR row pointer, shape (N + 1,), from :func:`edge_index_to_csr`.
        col: CSR column indices, shape (E,).
        num_walks: walks started per node.
        walk_length: nodes per walk, start node included.
        generator: random source on ``rowptr``'s device; ``None`` uses torch's global one.

    Returns:
        Node ids, shape (num_walks * N, walk_length), long; row ``p * N + i`` is the ``i``-th
        walk of pass ``p``.
    """
    _positive(num_walks=num_walks, walk_length=walk_length)
    device = rowptr.device
    num_nodes = rowptr.numel() - 1
    starts = torch.cat(
        [torch.randperm(num_nodes, generator=generator, device=device) for _ in range(num_walks)]
    )
    deg = rowptr[1:] - rowptr[:-1]
    walks = torch.empty(starts.numel(), walk_length, dtype=torch.long, device=device)
    walks[:, 0] = cur = starts
    last = max(col.numel() - 1, 0)
    padded_col = col if col.numel() else torch.zeros(1, dtype=torch.long, device=device)
    for step in range(1, walk_length):
        d = deg[cur]
        u = torch.rand(cur.numel(), generator=generator, device=device)
        # floor(u * d) can round up to d in float32 for huge degrees; clamp keeps it in range.
        offset = torch.minimum((u * d).long(), (d - 1).clamp(min=0))
        nxt = padded_col[(rowptr[cur] + offset).clamp(max=last)]
        cur = torch.where(d > 0, nxt, cur)
        walks[:, step] = cur
    return walks


def walk_mask(walks: Tensor, rowptr: Tensor) -> Tensor:
    """Mark the positions a reference walk would have reached (it stops at dead ends).

    Args:
        walks: output of :func:`random_walks`, shape (W, L).
        rowptr: the CSR row pointer the walks were drawn from, shape (N + 1,).

    Returns:
        Bool tensor (W, L): ``True`` up to and including the first node without out-neighbours.
    """
    deg = rowptr[1:] - rowptr[:-1]
    alive = deg[walks[:, :-1]] > 0
    first = torch.ones(walks.size(0), 1, dtype=torch.bool, device=walks.device)
    return torch.cat([first, alive.cumprod(dim=1).bool()], dim=1)


def train_skipgram(
    walks: Tensor,
    num_nodes: int,
    *,
    window: int,
    epochs: int,
    dim: int,
    generator: torch.Generator,
    mask: Tensor | None = None,
    num_negatives: int = 5,
    lr: float = 0.025,
    batch_size: int = 2**18,
) -> Tensor:
    """Skip-gram with negative sampling over node walks, a torch stand-in for Word2Vec (§4.7).

    This replaces gensim Word2Vec (skip-gram with hierarchical softmax *and* 5-word negative
    sampling, downsampling, linearly decaying SGD) by negative sampling alone with Adam: a
    deviation from the reference. Each epoch shuffles the walks; per batch of walks it forms
    every (center, context) pair within a window shrunk per center to a uniform draw from
    [1, ``window``] (gensim's default), draws ``num_negatives`` noise nodes per pair from the
    unigram^0.75 distribution of the walk corpus (a draw equal to the context is ignored, as in
    gensim) and takes one Adam step on the mean over pairs of
    ``-log σ(u_c·v_o) - Σ_k log σ(-u_c·v_k)``. Input vectors start uniform in ±0.5/dim (as in
    gensim), output vectors at zero; the input table is returned.

    A batch holds about N walk positions (at most ``batch_size`` pair slots), so a node is
    updated about once per occurrence in the corpus, as in per-pair SGD, whatever the graph
    size; with a fixed batch, tiny graphs got too few steps and poor embeddings.

    Args:
        walks: node ids, shape (W, L).
        num_nodes: N, the number of embedding rows.
        window: maximum distance between a center and its context.
        epochs: passes over the walks.
        dim: embedding width.
        generator: random source on ``walks``' device.
        mask: positions that belong to a walk, shape (W, L) bool; ``None`` means all.
        num_negatives: noise nodes per pair (k).
        lr: Adam learning rate.
        batch_size: upper bound on (center, context) slots per step (memory bound).

    Returns:
        Embeddings, shape (N, dim), float32, on ``walks``' device, detached.
    """
    _positive(window=window, epochs=epochs, dim=dim, num_nodes=num_nodes)
    _positive(num_negatives=num_negatives, batch_size=batch_size)
    if walks.dim() != 2:
        raise ValueError(f"walks must have shape (W, L), got {tuple(walks.shape)}")
    device = walks.device
    mask = torch.ones_like(walks, dtype=torch.bool) if mask is None else mask.to(device)
    if mask.shape != walks.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal walks {tuple(walks.shape)}")
    length = walks.size(1)
    offsets = range(1, min(window, length - 1) + 1)

    init = torch.rand(num_nodes, dim, generator=generator, device=device)
    center = torch.nn.Parameter((init - 0.5) / dim)
    context = torch.nn.Parameter(torch.zeros(num_nodes, dim, device=device))
    if not len(offsets) or not walks.numel():
        return center.detach().clone()

    counts = torch.bincount(walks[mask], minlength=num_nodes).double()
    noise_cdf = torch.cumsum(counts.pow(0.75), 0)
    noise_cdf /= noise_cdf[-1].clone()
    slots_per_walk = 2 * sum(length - o for o in offsets)
    walks_per_step = max(1, min(-(-num_nodes // length), batch_size // slots_per_walk))
    # Dense Adam: on CPU it ran faster than SparseAdam's coalescing of ~6 rows per pair, and
    # its cost per step (O(N * dim)) is small next to the pairs on a GPU.
    optimizer = torch.optim.Adam([center, context], lr=lr)

    for _ in range(epochs):
        order = torch.randperm(walks.size(0), generator=generator, device=device)
        for chunk in order.split(walks_per_step):
            w, m = walks[chunk], mask[chunk]
            reach = torch.randint(1, window + 1, w.shape, generator=generator, device=device)
            src, dst, keep = [], [], []
            for o in offsets:
                both = m[:, :-o] & m[:, o:]
                # forward: center at t sees t + o; backward: center at t + o sees t
                src += [w[:, :-o], w[:, o:]]
                dst += [w[:, o:], w[:, :-o]]
                keep += [both & (reach[:, :-o] >= o), both & (reach[:, o:] >= o)]
            c = torch.cat([s.reshape(-1) for s in src])
            o_ = torch.cat([d.reshape(-1) for d in dst])
            weight = torch.cat([k.reshape(-1) for k in keep]).float()
            u = torch.rand(c.numel(), num_negatives, generator=generator, device=device)
            noise = torch.searchsorted(noise_cdf, u.double(), right=True).clamp(max=num_nodes - 1)
            if device.type == "cpu":  # a host sync costs nothing here: drop the 0-weight slots
                kept = weight.bool()
                c, o_, noise, weight = c[kept], o_[kept], noise[kept], weight[kept]
            # On GPU, masked pairs stay in with weight 0: static shapes and no host sync.
            emb_c = F.embedding(c, center)
            pos = F.logsigmoid((emb_c * F.embedding(o_, context)).sum(-1))
            neg_scores = torch.bmm(F.embedding(noise, context), emb_c.unsqueeze(-1)).squeeze(-1)
            neg = (F.logsigmoid(-neg_scores) * (noise != o_.unsqueeze(-1))).sum(-1)
            loss = -((pos + neg) * weight).sum() / weight.sum().clamp(min=1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return center.detach().clone()


def deepwalk(
    edge_index: Tensor,
    num_nodes: int,
    *,
    walk_length: int,
    num_walks: int,
    window: int,
    epochs: int,
    dim: int,
    seed: int,
    device: torch.device | str | None = None,
    lr: float = 0.025,
    batch_size: int = 2**18,
) -> Tensor:
    """DeepWalk embedding of a graph: walks, then skip-gram (§4.7; Table D gives the values).

    Deterministic for a fixed ``seed`` on CPU. On CUDA the seed fixes the device generator too
    (a different stream from the CPU one), but bitwise reproducibility is not promised there.

    Args:
        edge_index: edges of the student's training graph, shape (2, E); walks follow
            source -> target.
        num_nodes: N.
        walk_length: nodes per walk (``walk_length``).
        num_walks: walks started per node (``num_walks``).
        window: skip-gram window (``window_size``).
        epochs: skip-gram passes over the walks (``iter``).
        dim: embedding width (``emb_size``).
        seed: seeds one private generator; the global torch RNG is left untouched.
        device: where to compute; defaults to ``edge_index``'s device.
        lr: Adam learning rate of :func:`train_skipgram`.
        batch_size: upper bound on (center, context) slots per step of :func:`train_skipgram`.

    Returns:
        Embeddings, shape (N, dim), float32, on ``device``.
    """
    device = torch.device(device) if device is not None else edge_index.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    rowptr, col = edge_index_to_csr(edge_index.to(device), num_nodes)
    walks = random_walks(
        rowptr, col, num_walks=num_walks, walk_length=walk_length, generator=generator
    )
    return train_skipgram(
        walks,
        num_nodes,
        window=window,
        epochs=epochs,
        dim=dim,
        generator=generator,
        mask=walk_mask(walks, rowptr),
        lr=lr,
        batch_size=batch_size,
    )


def impute_heldout(
    pe_observed: Tensor,
    observed_idx: Tensor,
    heldout_idx: Tensor,
    full_edge_index: Tensor,
    num_nodes: int,
) -> Tensor:
    """Place observed embeddings on the full graph and impute held-out rows (§4.7, inductive).

    Each held-out node gets the mean of its full-graph in-neighbours' rows, one hop, taken before
    any imputation: held-out neighbours contribute zero rows and a self-loop adds the node's own
    zero row (reference behaviour, §10.1 item 14). Duplicate edges count once per copy. A
    held-out node without in-neighbours keeps a zero row, as do nodes in neither index.

    Args:
        pe_observed: embeddings of the observed nodes in observed order, shape (N_obs, D).
        observed_idx: full-graph id of each observed row, shape (N_obs,).
        heldout_idx: full-graph ids of the held-out nodes, shape (N_held,).
        full_edge_index: edges of the full graph, shape (2, E), source -> target.
        num_nodes: N of the full graph.

    Returns:
        Embeddings for every full-graph node, shape (N, D), on ``pe_observed``'s device.
    """
    if pe_observed.dim() != 2 or pe_observed.size(0) != observed_idx.numel():
        raise ValueError(
            f"pe_observed has shape {tuple(pe_observed.shape)} but observed_idx has "
            f"{observed_idx.numel()} entries; pass one embedding row per observed node"
        )
    if full_edge_index.dim() != 2 or full_edge_index.size(0) != 2:
        raise ValueError(
            f"full_edge_index must have shape (2, E), got {tuple(full_edge_index.shape)}"
        )
    device = pe_observed.device
    src, dst = full_edge_index.to(device).long()
    base = pe_observed.new_zeros(num_nodes, pe_observed.size(1))
    base[observed_idx.to(device).long()] = pe_observed
    held = heldout_idx.to(device).long()
    is_held = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    is_held[held] = True
    # Only edges into held-out nodes matter; gathering all E rows would cost E x D memory.
    into_held = is_held[dst]
    src, dst = src[into_held], dst[into_held]
    sums = base.new_zeros(base.shape).index_add_(0, dst, base[src])
    deg = torch.bincount(dst, minlength=num_nodes).clamp(min=1).to(base.dtype)
    out = base.clone()
    out[held] = sums[held] / deg[held].unsqueeze(-1)
    return out

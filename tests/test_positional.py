"""DeepWalk positional encoding (method §4.7): walks, skip-gram, inductive imputation, cache."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rbm_tune.deepwalk_cache import cached_deepwalk, deepwalk_cache_key, deepwalk_store
from rbm_tune.positional import (
    deepwalk,
    edge_index_to_csr,
    impute_heldout,
    random_walks,
    train_skipgram,
    walk_mask,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cliques(count: int, size: int) -> torch.Tensor:
    """Edges of ``count`` disjoint complete graphs of ``size`` nodes each, both directions."""
    block = torch.ones(size, size) - torch.eye(size)
    return torch.block_diag(*[block] * count).nonzero().t()


def small_graph() -> tuple[torch.Tensor, int]:
    """7 nodes: a triangle 0-1-2 (both directions), a path 2->3->4 ending in the sink 4,
    a self-loop on 5 (a walker there stays put) and the isolated node 6; 0->1 is doubled."""
    edges = [(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0), (2, 3), (3, 4), (5, 5), (0, 1)]
    return torch.tensor(edges).t(), 7


def test_csr_merges_duplicates_and_sorts() -> None:
    edge_index, n = small_graph()
    rowptr, col = edge_index_to_csr(edge_index, n)
    assert rowptr.tolist() == [0, 2, 4, 7, 8, 8, 9, 9]
    assert col.tolist() == [1, 2, 0, 2, 0, 1, 3, 4, 5]


def test_csr_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match="num_nodes"):
        edge_index_to_csr(torch.tensor([[0], [5]]), 3)


@pytest.mark.parametrize("device", DEVICES)
def test_walks_follow_edges_and_start_everywhere(device: str) -> None:
    edge_index, n = small_graph()
    rowptr, col = edge_index_to_csr(edge_index.to(device), n)
    gen = torch.Generator(device=device).manual_seed(0)
    walks = random_walks(rowptr, col, num_walks=3, walk_length=6, generator=gen)
    assert walks.shape == (3 * n, 6) and walks.dtype == torch.long
    assert walks.device.type == device

    edges = set(map(tuple, edge_index.t().tolist()))
    dead_ends = {4, 6}
    walks = walks.cpu()
    for a, b in zip(walks[:, :-1].reshape(-1).tolist(), walks[:, 1:].reshape(-1).tolist()):
        assert (a, b) in edges or (a == b and a in dead_ends)
    for p in range(3):  # each pass starts once from every node
        assert sorted(walks[p * n : (p + 1) * n, 0].tolist()) == list(range(n))
    assert (walks[walks[:, 0] == 5] == 5).all()  # the self-loop is the only way out of 5


def test_walks_depend_on_the_seed_only() -> None:
    rowptr, col = edge_index_to_csr(cliques(2, 6), 12)

    def walks(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return random_walks(rowptr, col, num_walks=4, walk_length=10, generator=gen)

    assert torch.equal(walks(1), walks(1))
    assert not torch.equal(walks(1), walks(2))


def test_walk_mask_cuts_after_the_first_dead_end() -> None:
    edge_index, n = small_graph()
    rowptr, _ = edge_index_to_csr(edge_index, n)
    walks = torch.tensor([[2, 3, 4, 4, 4], [6, 6, 6, 6, 6], [0, 1, 0, 2, 3]])
    expected = [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert walk_mask(walks, rowptr).int().tolist() == expected


def test_masked_positions_give_no_training_signal() -> None:
    walks = torch.randint(0, 10, (20, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(walks, dtype=torch.bool)
    mask[:, 0] = True  # every walk stopped right at its start node: no pairs at all

    def train(w: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(3)
        return train_skipgram(w, 10, window=3, epochs=2, dim=4, generator=gen, mask=m)

    assert torch.equal(train(walks, mask), train(walks[:, :1], None))  # still the initial table


@pytest.mark.parametrize("seed", [0, 1])
def test_deepwalk_separates_disconnected_cliques(seed: int) -> None:
    z = deepwalk(
        cliques(2, 10), 20, walk_length=20, num_walks=5, window=5, epochs=1, dim=16, seed=seed
    )
    assert z.shape == (20, 16) and z.dtype == torch.float32 and torch.isfinite(z).all()
    zn = F.normalize(z, dim=1)
    cos = zn @ zn.t()
    clique = torch.arange(20) // 10
    same = (clique[:, None] == clique[None, :]) & ~torch.eye(20, dtype=torch.bool)
    cross = clique[:, None] != clique[None, :]
    # every same-clique pair is more similar than every cross-clique pair, by a wide margin
    # (over seeds 0-19 the smallest gap was 0.81; random vectors in 16-d give none)
    assert cos[same].min() > cos[cross].max() + 0.3


def test_deepwalk_is_deterministic_under_a_seed() -> None:
    def run(seed: int) -> torch.Tensor:
        return deepwalk(
            cliques(2, 5), 10, walk_length=8, num_walks=2, window=3, epochs=2, dim=8, seed=seed
        )

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("device", DEVICES)
def test_impute_heldout_hand_computed(device: str) -> None:
    # full graph of 6 nodes; observed 3, 0, 1 (in that observed order); held out 2, 4, 5
    observed_idx = torch.tensor([3, 0, 1])
    pe_observed = torch.tensor([[3.0, 30.0], [0.0, 6.0], [3.0, 0.0]], device=device)
    heldout_idx = torch.tensor([2, 4, 5])
    # 0->2, 1->2, 4->2 (held out: a zero row), 3->4, 4->4 (self-loop: own zero row), 2->0
    full = torch.tensor([[0, 1, 4, 3, 4, 2], [2, 2, 2, 4, 4, 0]])
    out = impute_heldout(pe_observed, observed_idx, heldout_idx, full, 6)
    expected = torch.tensor(
        [
            [0.0, 6.0],  # observed rows unchanged, even with an in-edge from a held-out node
            [3.0, 0.0],
            [(0 + 3 + 0) / 3, (6 + 0 + 0) / 3],  # mean over 0, 1 and held-out 4
            [3.0, 30.0],
            [(3 + 0) / 2, (30 + 0) / 2],  # mean over 3 and itself
            [0.0, 0.0],  # no in-neighbours
        ]
    )
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), expected)


def test_impute_heldout_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="one embedding row per observed node"):
        impute_heldout(
            torch.zeros(2, 3),
            torch.tensor([0, 1, 2]),
            torch.tensor([3]),
            torch.zeros(2, 0, dtype=torch.long),
            4,
        )


def test_cache_computes_once_and_reuses(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.arange(12.0).reshape(4, 3)

    key = deepwalk_cache_key(
        "graph-abc", seed=0, walk_length=5, num_walks=2, window=3, epochs=1, dim=3
    )
    first = cached_deepwalk(tmp_path, key, compute)
    second = cached_deepwalk(tmp_path, key, compute)
    assert len(calls) == 1 and torch.equal(first, second)
    # one entry folder (payload.pt + meta.json) and the lock folder; no temp file left behind
    (entry,) = (p for p in tmp_path.iterdir() if p.name != ".locks")
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "payload.pt"]

    other = key.replace("seed=0", "seed=1")
    assert other != key
    cached_deepwalk(tmp_path, other, compute)
    assert len(calls) == 2


def _embed(edges: torch.Tensor, n: int, calls: list[int]) -> torch.Tensor:
    calls.append(1)
    return deepwalk(edges, n, walk_length=8, num_walks=2, window=3, epochs=1, dim=4, seed=0)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "meta"])
def test_corrupt_entry_is_set_aside_and_recomputed(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real cached DeepWalk file, damaged: one warning line, moved aside, computed again."""
    edges, n, calls = cliques(2, 5), 10, []
    store = deepwalk_store(tmp_path)  # entries in <cache_dir>/deepwalk, as trials use it
    key = deepwalk_cache_key("g", seed=0, walk_length=8, num_walks=2, window=3, epochs=1, dim=4)
    first = cached_deepwalk(store, key, lambda: _embed(edges, n, calls))
    (entry,) = (p for p in (tmp_path / "deepwalk").iterdir() if p.name != ".locks")
    target = entry / ("meta.json" if damage == "meta" else "payload.pt")
    blob = target.read_bytes()
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob = blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:]
    else:
        blob = b"not a cache file"
    target.write_bytes(blob)

    with caplog.at_level(logging.WARNING, logger="rbm_tune.deepwalk_cache"):
        again = cached_deepwalk(deepwalk_store(tmp_path), key, lambda: _embed(edges, n, calls))
    assert len(calls) == 2 and torch.equal(first, again)  # recomputed: the same embedding
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith(f"rbm-tune: warning: DeepWalk cache entry {entry} is corrupt (")
    (aside,) = (tmp_path / "deepwalk").glob(f"{entry.name}.corrupt-*")
    assert message.endswith(f"moved aside to {aside} and recomputing")
    assert (aside / target.name).read_bytes() == blob  # kept for inspection, never used
    caplog.clear()
    third = cached_deepwalk(deepwalk_store(tmp_path), key, lambda: _embed(edges, n, calls))
    assert len(calls) == 2 and torch.equal(first, third) and not caplog.records


def test_entry_of_another_key_is_not_served(tmp_path: Path) -> None:
    """A checksummed entry whose payload names another key (copied by hand) is set aside."""
    cached_deepwalk(tmp_path, "a", lambda: torch.ones(3, 2))
    cached_deepwalk(tmp_path, "b", lambda: torch.zeros(3, 2))
    entries = {p.name: p for p in tmp_path.iterdir() if p.name != ".locks"}
    from rbm_tune.store import content_digest

    a, b = entries[content_digest("a")], entries[content_digest("b")]
    for name in ("payload.pt", "meta.json"):
        (b / name).write_bytes((a / name).read_bytes())
    got = cached_deepwalk(tmp_path, "b", lambda: torch.full((3, 2), 2.0))
    assert torch.equal(got, torch.full((3, 2), 2.0))
    assert len(list(tmp_path.glob(f"{b.name}.corrupt-*"))) == 1


def test_unwritable_cache_warns_and_returns_the_embedding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # the cache root lies under a regular file: nothing can be written
    with caplog.at_level(logging.WARNING, logger="rbm_tune.deepwalk_cache"):
        got = cached_deepwalk(blocker / "deepwalk", "k", lambda: torch.ones(2, 2))
    assert torch.equal(got, torch.ones(2, 2))
    (record,) = caplog.records
    assert record.getMessage().startswith("rbm-tune: warning: could not store DeepWalk embedding ")

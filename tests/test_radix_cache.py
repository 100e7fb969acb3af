"""The prefix cache and the KV block pool: insert, match, evict, reference counts, copy-on-write."""

import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.engine.kv_cache import KVCache, KVPoolFullError
from ponder.engine.radix_cache import RadixCache
from ponder.loading.model_files import load_model


def pool(blocks=8, bs=4):
    kv = KVCache(n_layers=1, n_kv_heads=1, head_dim=2, num_blocks=blocks, block_size=bs)
    return kv, RadixCache(kv)


def seq_blocks(kv, n):
    return [kv.allocate() for _ in range(n)]


def check_invariants(kv):
    evictable = int(((kv.ref_count == 1) & kv.cached).sum())
    assert kv.num_evictable == evictable
    assert kv.num_free == int((kv.ref_count == 0).sum())
    assert not kv.cached[kv.ref_count == 0].any()


def test_match_is_block_aligned_and_token_exact():
    kv, radix = pool()
    tokens = list(range(10))  # 2 full blocks of 4, plus 2 tokens
    table = seq_blocks(kv, 3)
    radix.insert(tokens, table, len(tokens))
    assert radix.num_nodes == 2  # full blocks only: the sequence may still write its tail
    assert radix.match(tokens) == (table[:2], 8)
    assert radix.match(tokens[:7]) == (table[:2], 7)  # the second block's first 3 tokens agree
    assert radix.match([0, 1, 2, 99, 4, 5, 6, 7]) == (table[:1], 3)  # differs inside the first block
    assert radix.match([9, 1, 2, 3]) == ([], 0)
    assert radix.match(tokens, limit=7) == (table[:2], 7)
    check_invariants(kv)


def test_partial_tail_of_a_finished_sequence_is_shared():
    kv, radix = pool()
    tokens = list(range(10))
    table = seq_blocks(kv, 3)
    radix.insert(tokens, table, 10, partial=True)
    assert radix.num_nodes == 3
    assert radix.match(tokens + [50, 51]) == (table, 10)
    assert radix.match(tokens[:9] + [77]) == (table, 9)  # the tail agrees on its first token
    assert radix.match(tokens, limit=9) == (table, 9)
    check_invariants(kv)


def test_shared_prefix_branches():
    kv, radix = pool()
    a, b = [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 9, 9, 9]
    ta = seq_blocks(kv, 2)
    radix.insert(a, ta, 8)
    tb = [kv.share(ta[0]), kv.allocate()]
    radix.insert(b, tb, 8)
    assert radix.num_nodes == 3
    assert radix.match(b) == (tb, 8) and radix.match(a) == (ta, 8)
    check_invariants(kv)


def test_eviction_is_lru_leaf_first_and_spares_blocks_in_use():
    kv, radix = pool(blocks=4)
    old, new = [0] * 8, [1] * 8
    t_old, t_new = seq_blocks(kv, 2), seq_blocks(kv, 2)
    radix.insert(old, t_old, 8)
    radix.insert(new, t_new, 8)
    for b in t_old:
        kv.release(b)  # the sequence finished: only the cache holds these
    assert kv.num_evictable == 2 and kv.num_free == 0
    assert radix.evict(1) == 1  # the leaf of `old` goes first; its parent is now a leaf
    assert radix.match(old) == (t_old[:1], 4)  # its second block is gone
    assert radix.evict(5) == 1  # `new` is still in use: only old's root block can go
    assert radix.match(new) == (t_new, 8) and radix.match(old) == ([], 0)
    check_invariants(kv)


def test_allocate_evicts_when_the_pool_is_full():
    kv, radix = pool(blocks=2)
    t = seq_blocks(kv, 2)
    radix.insert([5] * 8, t, 8)
    for b in t:
        kv.release(b)
    assert kv.num_free == 0 and kv.num_available == 2
    fresh = kv.allocate()
    assert fresh in t and radix.num_nodes == 1
    kv.allocate()
    with pytest.raises(KVPoolFullError):
        kv.allocate()
    check_invariants(kv)


def test_copy_on_write_copies_a_shared_block():
    kv, _ = pool()
    table = seq_blocks(kv, 1)
    kv.k[:, table[0]] = 3.0
    fork = [kv.share(table[0])]
    kv.make_writable(fork, 0)
    assert fork[0] != table[0] and kv.ref_count[table[0]] == 1 and kv.ref_count[fork[0]] == 1
    np.testing.assert_array_equal(kv.k[:, fork[0]], kv.k[:, table[0]])
    kv.make_writable(table, 0)  # sole owner: no copy
    assert kv.ref_count[table[0]] == 1


def test_engine_reuses_a_shared_prefix_and_gets_identical_results(tiny_llama):
    model = load_model(str(tiny_llama[2]))
    warm = Engine(model)
    cold = Engine(model, prefix_cache=False)
    prefix = [5 + (i * 7) % 250 for i in range(100)]
    p = SamplingParams(temperature=0.8, seed=4, max_tokens=8, ignore_eos=True)
    first = warm.generate(prefix + [11, 12], p)[0]
    second = warm.generate(prefix + [13, 14, 15], p)[0]
    assert second.usage["cached_tokens"] == 100  # six full blocks and the 4-token tail of the shared prefix
    assert second.token_ids == cold.generate(prefix + [13, 14, 15], p)[0].token_ids
    assert second.logprobs == cold.generate(prefix + [13, 14, 15], p)[0].logprobs
    again = warm.generate(prefix + [11, 12], p)[0]
    assert again.token_ids == first.token_ids and again.logprobs == first.logprobs
    # continuing a finished text reuses all of it: prompt and output
    cont = first.prompt_token_ids + first.token_ids
    res = warm.generate(cont + [20], p)[0]
    assert res.token_ids == cold.generate(cont + [20], p)[0].token_ids
    assert res.usage["cached_tokens"] == len(cont) - 1  # the last sampled token was never fed through the model

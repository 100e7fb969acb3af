"""Draft trees: branch layout, tree attention against a float64 masked reference, and every node's
logits bit-identical to decoding its root-to-node path linearly (tiny model)."""

import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.engine.draft_tree import DraftTree
from ponder.engine.model_runner import ModelRunner
from ponder.engine import token_recycling
from ponder.engine.scheduler import ScheduledChunk, Scheduler
from ponder.kernels import attention
from ponder.loading.model_files import load_model
from ponder.model.fast_model import FastModel, StepInput

# root's children 0, 1, 2; 0 -> 3, 4; 3 -> 5 -> 6; 1 -> 7
TREE = DraftTree([11, 12, 13, 14, 15, 16, 17, 18], [-1, -1, -1, 0, 0, 3, 5, 1])


def test_branches_follow_first_children():
    t = TREE
    assert t.depth == [1, 1, 1, 2, 2, 3, 4, 2]
    assert t.branch_of == [0, 1, 2, 0, 3, 0, 0, 1]
    assert t.branch_start == [-1, 1, 2, 4]
    assert t.main_depth() == 4 and t.branch_depth(1) == 2 and t.branch_depth(3) == 2
    assert t.ancestors(6) == [-1, 0, 3, 5] and t.ancestors(1) == [-1]
    assert t.child_with_token(0, 15) == 4 and t.child_with_token(-1, 99) is None
    assert t.prefix(4).parents == [-1, -1, -1, 0]
    assert t.main_chain().tokens == [11, 14, 16, 17]
    line = DraftTree.linear([5, 6, 7])
    assert line.parents == [-1, 0, 1] and line.num_branches == 1


class _Seq:
    """What ModelRunner.build reads of a sequence."""

    def __init__(self, tokens, block_table, draft):
        self.tokens, self.block_table, self.draft = tokens, block_table, draft
        self.scoring = False

    def __len__(self):
        return len(self.tokens)


def _layout(p0, tree, bs, first_free):
    """A sequence of p0 + 1 tokens (the last one the root) and tree, laid out as the scheduler does."""
    n_seq = (p0 + tree.main_depth()) // bs + 1
    table = list(range(first_free, first_free + n_seq))
    nxt = first_free + n_seq
    tree = DraftTree(list(tree.tokens), list(tree.parents))
    tree.shared_blocks = p0 // bs
    for b in range(1, tree.num_branches):
        n = (p0 + tree.branch_depth(b)) // bs - p0 // bs + 1
        tree.branch_tables[b] = table[:p0 // bs] + list(range(nxt, nxt + n))
        nxt += n
    seq = _Seq(list(range(p0 + 1)), table, tree)
    return seq, tree, nxt


@pytest.mark.parametrize("p0", [5, 14, 16, 30])
def test_tree_attention_matches_masked_float64_reference(p0):
    bs, kvh, g, d = 16, 2, 3, 64
    rng = np.random.default_rng(p0)
    seq, tree, n_blocks = _layout(p0, TREE, bs, 0)
    step, _ = ModelRunner.build([ScheduledChunk(seq, p0, 1 + len(tree))])
    k_pool = rng.standard_normal((n_blocks, kvh, d, bs)).astype(np.float32)
    v_pool = rng.standard_normal((n_blocks, kvh, bs, d)).astype(np.float32)
    # the committed context: positions < p0 of the sequence's blocks, copied into each branch's first tail block
    ctx_k = np.concatenate([k_pool[b].transpose(0, 2, 1) for b in seq.block_table], axis=1)[:, :p0]
    ctx_v = np.concatenate([v_pool[b] for b in seq.block_table], axis=1)[:, :p0]
    for table in tree.branch_tables.values():
        blk, src = table[p0 // bs], seq.block_table[p0 // bs]
        k_pool[blk, :, :, :p0 % bs] = k_pool[src, :, :, :p0 % bs]
        v_pool[blk, :, :p0 % bs] = v_pool[src, :, :p0 % bs]
    n = len(step.tokens)
    q = rng.standard_normal((n, kvh * g, d)).astype(np.float32)
    k = rng.standard_normal((n, kvh, d)).astype(np.float32)
    v = rng.standard_normal((n, kvh, d)).astype(np.float32)
    slot_token, slot_pos, slot_row = step.kv_slots
    attention.write_kv(k_pool, v_pool, k, v, slot_token, step.block_tables[slot_row, slot_pos // bs],
                       (slot_pos % bs).astype(np.int32))
    out = np.full_like(q, np.nan)
    ctx = (step.positions + 1).astype(np.int32)
    attention.paged_attention(q, k_pool, v_pool, step.block_tables, step.token_row, ctx, np.float32(d ** -0.5), out,
                              *attention.prefix_groups(step.block_tables, step.token_row, ctx, bs))
    for t in range(n):  # token 0 is the root, token 1 + i is node i
        path = [0] + [1 + a for a in tree.ancestors(t - 1)[1:]] + ([t] if t else [])
        keys = np.concatenate([ctx_k, k[path].transpose(1, 0, 2)], axis=1).astype(np.float64)
        vals = np.concatenate([ctx_v, v[path].transpose(1, 0, 2)], axis=1).astype(np.float64)
        for h in range(kvh * g):
            s = keys[h // g] @ q[t, h] * d ** -0.5
            p = np.exp(s - s.max())
            np.testing.assert_allclose(out[t, h], p @ vals[h // g] / p.sum(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return load_model(str(tiny_llama[2]))


@pytest.mark.parametrize("p0", [9, 14, 31])
def test_every_node_is_bit_identical_to_its_path_decoded_linearly(tiny, p0):
    model = FastModel(tiny.weights)
    c, bs = model.config, 16
    from ponder.engine.kv_cache import KVCache

    kv = KVCache(c.n_layers, c.n_kv_heads, c.head_dim, 64, bs)
    prompt = [(7 * i + 3) % c.vocab_size for i in range(p0 + 1)]
    seq, tree, _ = _layout(p0, TREE, bs, 0)
    seq.tokens = prompt
    # prefill the committed positions < p0 in one chunk, then copy the partial block into the tails
    pre = StepInput(np.array(prompt[:p0]), np.arange(p0), np.zeros(p0, np.int32),
                    np.array([seq.block_table], np.int32), np.array([p0 - 1]))
    model.forward(pre, kv.k, kv.v)
    kv.copy_lanes(seq.block_table[p0 // bs], [t[p0 // bs] for t in tree.branch_tables.values()], p0 % bs)
    step, _ = ModelRunner.build([ScheduledChunk(seq, p0, 1 + len(tree))])
    got = model.forward(step, kv.k, kv.v)
    for node in range(-1, len(tree)):
        path = [tree.tokens[a] for a in tree.ancestors(node)[1:]] + ([tree.tokens[node]] if node >= 0 else [])
        toks = prompt + path
        fresh = KVCache(c.n_layers, c.n_kv_heads, c.head_dim, 8, bs)
        lin = StepInput(np.array(toks), np.arange(len(toks)), np.zeros(len(toks), np.int32),
                        np.arange(-(-len(toks) // bs), dtype=np.int32)[None, :], np.array([len(toks) - 1]))
        want = model.forward(lin, fresh.k, fresh.v)[0]
        np.testing.assert_array_equal(got[1 + node], want)


@pytest.mark.parametrize("mode", ["recycling", "lookup"])
@pytest.mark.parametrize("params", [SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=2),
                                    SamplingParams(temperature=0.8, seed=3, max_tokens=40, ignore_eos=True, n=2)],
                         ids=["greedy", "seeded_n2"])
@pytest.mark.parametrize("shape", ["default", "second_first"])
def test_speculation_changes_no_token_alone_or_batched(tiny, mode, params, shape, monkeypatch):
    adopted = []
    if shape == "second_first":
        if mode == "lookup":
            pytest.skip("the shape is Token Recycling's")
        # the root's second likeliest successor leads branch 0, so accepted paths end in other branches
        monkeypatch.setattr(token_recycling, "SHAPE", ((-1, 1), (-1, 0), (1, 0), (1, 1), (2, 0), (0, 0)))
        orig = Scheduler._adopt_branch
        monkeypatch.setattr(Scheduler, "_adopt_branch", lambda self, *a: (adopted.append(a[-1]), orig(self, *a)))
    spec = Engine(tiny, speculative=mode, speculative_tokens=8, speculative_max_batch=8, kv_blocks=64)
    plain = Engine(tiny, kv_blocks=64)
    prompts = [[40, 41, 42, 43, 44] * 8, [7, 8, 9] * 5, [100 + i for i in range(30)]]
    first = None
    for batch in ([prompts[0]], prompts, "continue"):
        if batch == "continue":  # a prompt that continues an answer: its blocks come from the prefix cache
            batch = [prompts[0] + first[0].outputs[0].token_ids]
        a, b = spec.generate(batch, params), plain.generate(batch, params)
        first = first or a
        for x, y in zip(a, b):
            for sx, sy in zip(x.outputs, y.outputs):
                assert sx.token_ids == sy.token_ids and sx.logprobs == sy.logprobs
                assert sx.top_logprobs == sy.top_logprobs
        assert sum(x.usage["speculative_proposed"] for x in a) > 0
    assert sum(x.usage["speculative_accepted"] for x in a) > 0
    assert spec.stats().kv_blocks_used == 0  # every private tail went back to the pool
    assert bool(adopted) == (shape == "second_first")


def test_a_shared_table_changes_no_token(tiny):
    """speculative_shared: one Token Recycling table for all requests; tokens still never depend on it."""
    spec = Engine(tiny, speculative="recycling", speculative_shared=True, speculative_max_batch=8, kv_blocks=64)
    plain = Engine(tiny, kv_blocks=64)
    params = SamplingParams(temperature=0.7, seed=5, max_tokens=30, ignore_eos=True)
    prompts = [[9, 10, 11] * 6, [200 + i for i in range(20)]]
    for batch in ([prompts[0]], [prompts[1]], prompts):  # the table carries over from request to request
        for x, y in zip(spec.generate(batch, params), plain.generate(batch, params)):
            assert x.token_ids == y.token_ids and x.logprobs == y.logprobs
            assert x.usage["speculative_proposed"] > 0

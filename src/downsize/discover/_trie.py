"""The token trie of :mod:`downsize.discover.templates` and its step rules (see that docstring)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MASKS", "Trie"]

MASKS = ("<NUM>", "<AT>", "<URL>")
_END, _START = "<END>", "<START>"
_DETERMINISTIC = 0.9
_DETERMINISTIC_SUFFIX = 0.97
_CHAIN_SHARE = 0.02


class Trie:
    """Token trie with counts, and the step rules of the module docstring."""

    def __init__(self, *, min_support: int, max_fanout: int, suffix: bool, fixed_masks: bool = False) -> None:
        self.children: list[dict[str, int]] = [{}]
        self.count: list[int] = [0]
        self.min_support = min_support
        self.max_fanout = max_fanout
        self.suffix = suffix
        self.fixed_masks = fixed_masks  # a mask token may be a fixed step (system prompts: "Today is <NUM>")
        self._variable: dict[int, bool] = {}
        self._chain: dict[int, int] = {}

    def build(self, seqs: Sequence[Sequence[str]], weights: Sequence[int] | None = None) -> Trie:
        """Count every prefix of ``seqs`` that can matter, level by level.

        Below a node with fewer than ``min_support`` sequences no step can be taken, so its
        descendants are never counted: the cost is about (fixed prefix length + 2) per sequence
        instead of the whole window.
        """
        w = list(weights) if weights is not None else [1] * len(seqs)
        self.count[0] = sum(w)
        frontier: dict[int, list[int]] = {0: list(range(len(seqs)))}
        depth = 0
        while frontier:
            nxt: dict[int, list[int]] = {}
            for node, idxs in frontier.items():
                if sum(w[i] for i in idxs) < self.min_support:
                    continue
                buckets: dict[str, list[int]] = {}
                for i in idxs:
                    seq = seqs[i]
                    if len(seq) > depth:
                        buckets.setdefault(seq[depth], []).append(i)
                ch = self.children[node]
                for tok, members in buckets.items():
                    child = ch[tok] = len(self.count)
                    self.children.append({})
                    self.count.append(sum(w[i] for i in members))
                    nxt[child] = members
            frontier = nxt
            depth += 1
        return self

    def variable(self, node: int) -> bool:
        v = self._variable.get(node)
        if v is None:
            ch = self.children[node]
            n = self.count[node]
            masked = sum(self.count[c] for t, c in ch.items() if t in MASKS)
            counts = sorted((self.count[c] for c in ch.values()), reverse=True)[: self.max_fanout]
            # a small node cannot show its fan-out: too few messages to tell a fork from text
            v = masked >= 0.3 * n or sum(counts) < 0.9 * n or len(ch) > 0.25 * n or n < 4 * self.min_support
            self._variable[node] = v
        return v

    def _dominant(self, node: int) -> tuple[str, int] | None:
        ch = self.children[node]
        if not ch:
            return None
        t, c = max(ch.items(), key=lambda kv: self.count[kv[1]])
        if self.count[c] < self.min_support or self.count[c] < _DETERMINISTIC * self.count[node]:
            return None
        return t, c

    def chain(self, tok: str, node: int) -> int:
        n = self._chain.get(node)
        if n is None:
            n, cur = 1, node
            while n < 4:
                d = self._dominant(cur)
                if d is None:
                    break
                n, cur = n + 1, d[1]
            self._chain[node] = n
        return n

    def walk(self, seq: Sequence[str]) -> tuple[str, ...]:
        """The fixed part of ``seq``: the steps taken by the rules of the module docstring.

        A step taken on *credit* (a chain or a fork is expected after it) must be followed by at
        least two more fixed tokens or by a ``Head:``: when the message leaves the
        structure sooner ("bank of …", "u s …" in the news), the tokens were the text's, not the
        template's, and are given back.
        """
        node, path = 0, []
        det = _DETERMINISTIC_SUFFIX if self.suffix else _DETERMINISTIC
        credit_at: int | None = None
        for tok in seq:
            child = self.children[node].get(tok)
            if child is None or self.count[child] < self.min_support:
                break
            share = self.count[child] / self.count[node]
            if tok in MASKS:
                if not (self.fixed_masks and share >= det):
                    break
            elif not self.suffix and tok.endswith(":"):
                credit_at = None  # a head: structure on its own
            elif not self.suffix and not self.variable(node):
                pass  # a fork (does not repay a credit: "u s", "u k" fork in the news)
            elif share < det:
                if self.suffix:
                    ok = share >= _CHAIN_SHARE and self.chain(tok, child) >= 3
                else:
                    ok = self.chain(tok, child) >= 3 or (share >= _CHAIN_SHARE and not self.variable(child))
                if not ok:
                    break
                credit_at = len(path) if credit_at is None else credit_at
            path.append(tok)
            node = child
            if tok in (_END, _START):
                credit_at = None
                break
        if credit_at is not None and len(path) - credit_at < 3 and len(path) < len(seq):
            del path[credit_at:]
        return tuple(path)

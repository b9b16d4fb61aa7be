"""Group logged requests into prompt templates (call sites): system prompt + fixed parts of the user message.

Method
------
Masking first: a token (a run of non-space characters; double quotes, backticks and newlines
are tokens of their own) that holds a digit, an ``@`` or starts with ``http`` is replaced by
``<NUM>``, ``<AT>`` or ``<URL>`` (a colon that ends it stays: ``<AT>:``). Masked tokens are
variables: a user-message template never includes one.

The **system key** is the fixed part of the masked system prompt, found in a trie of the
system prompts as below (each weighted by the distinct user messages it came with): the whole
prompt when it is fixed, its opening when a document, a customer's name or the like follows.
Unlike in user messages, a masked token that (nearly) every prompt has at its place is a
fixed step ("Today is <NUM>.").

Within each system key, the **user key** is the fixed prefix and the fixed suffix of the last
user message. The first ``prefix_tokens`` masked tokens of every *distinct* message go into a
token trie (each distinct text counted once, so that repeated requests never pose as a
template), and a message's prefix is the path it walks from the root while each step is a
template step, taken by at least ``min_support`` distinct messages and

* *deterministic*: ≥ 90 % of the messages at the node continue with this token; or
* out of a *fork*: at most ``max_fanout`` next tokens cover 90 % of the node (several templates
  share the text so far), judged only on nodes of ≥ 4 × ``min_support`` messages; or
* a *head*: the token ends in ``:`` ("Ticket:", "Review:"); or
* on *credit*: the token starts a chain of ≥ 3 deterministic tokens, or holds ≥ 2 % of the node
  and a fork or a chain follows it. A credit is repaid by two more fixed tokens or a head; a
  message that leaves the structure sooner gives the tokens back: "bank of …", "u s …" and
  "u k …" open 1–4 % of the Reuters stories, "This is …" 3 % of the reviews.

Variable text defeats these tests: its next words are many (no fork), none dominant (no
deterministic step), and the words common in text ("The", "A": 12 % of the Rotten Tomatoes
reviews) are followed by anything (no chain). The suffix is walked the same way from the end,
stricter (97 % for a deterministic step; no fork or head rule; a credit needs a chain of 3 and
2 % of the node), because text endings are more regular than beginnings: 91 % of the Reuters
stories end with "reuter".

Limits
------
* A slot filled from a small vocabulary (at most ``max_fanout`` values with ``min_support``
  requests each: a language, one of a few products) looks like a fork, so the call site comes
  out as one template per value: completeness suffers, purity does not.
* What is not logged cannot separate call sites: downsize's gateway logs only the last user
  message, so two call sites that send the bare text under different system prompts are one
  template there (``bench_discover.py``: r8_tagger and rt_bare).
* Templates that share their first ``prefix_tokens`` and last ``suffix_tokens`` tokens and
  differ only in between are one template.

Why not drain3
--------------
Drain (He et al. 2017; ``drain3`` 0.9.11 is its maintained implementation) is built for
machine logs: its first split is the *number of tokens* and a message joins a cluster when
enough token positions agree. A prompt template wraps free text of any length, so Drain makes
thousands of clusters per template. Measured by ``benchmarks/bench_discover.py`` on 20,000
constructed requests of 11 call sites (default drain3 settings, the same masks): drain3 on
the whole message, purity 1.000 but completeness 0.056 (7,703 clusters); on the windows this
miner reads (24 first + 16 last tokens), completeness 0.212 (4,526 clusters); this miner,
purity 1.000 and completeness 0.999 (12 templates), and on 60 made-up call sites 60 of 60
recovered. The tries are a few dozen lines and need no dependency.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NotFittedError
from ._records import LogRecord
from ._trie import _END, _START, MASKS, Trie

__all__ = ["MASKS", "Template", "TemplateMiner", "mask_text", "tokenize"]

_TOKEN = re.compile(r'\n|["“”`]|[^\s"“”`]+')
# each mask starts at a token boundary and cannot backtrack (the run before the digit or ``@``
# excludes it), so masking is linear in the text
_MASK_URL = re.compile(r'(?<![^\s"“”`])https?://[^\s"“”`]+')
_MASK_AT = re.compile(r'(?<![^\s"“”`])[^\s"“”`@]*@[^\s"“”`:]*(?::(?![\s"“”`]|$)[^\s"“”`:]*)*')
_MASK_NUM = re.compile(r'(?<![^\s"“”`])[^\s"“”`\d]*\d[^\s"“”`:]*(?::(?![\s"“”`]|$)[^\s"“”`:]*)*')


def mask_text(text: str) -> str:
    """Replace URL, ``@`` and digit-bearing tokens by ``<URL>``, ``<AT>``, ``<NUM>``.

    A colon that ends the token is kept (``<AT>:``, as in "Ticket from ann@x.org: ..."): it is
    the template's, not the value's.

    >>> mask_text('Order 12-A from bob@example.com, at 10:30 see https://x.io/1 "now" ref 7:')
    'Order <NUM> from <AT> at <NUM> see <URL> "now" ref <NUM>:'
    """
    if "http" in text:
        text = _MASK_URL.sub("<URL>", text)
    if "@" in text:
        text = _MASK_AT.sub("<AT>", text)
    return _MASK_NUM.sub("<NUM>", text)


def tokenize(text: str) -> list[str]:
    """Tokens as the miner sees them (masking does not move token boundaries)."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Template:
    """One call site.

    Attributes
    ----------
    id : int
        Index in :attr:`TemplateMiner.templates_` (largest first).
    system : str
        A representative system prompt (verbatim, from the first request of the template).
    prefix, suffix : tuple of str
        Fixed (masked) tokens that open / close the user message (the suffix is descriptive:
        shared by ≥ 95 % of the template's messages).
    count : int
        Requests assigned to it when fitted.
    """

    id: int
    system: str
    prefix: tuple[str, ...]
    suffix: tuple[str, ...]
    count: int
    key: Any = None

    def pattern(self, width: int = 60) -> str:
        """``[system…] prefix {…} suffix`` on one line."""
        sys_ = " ".join(self.system.split())
        sys_ = (sys_[: width - 1] + "…") if len(sys_) > width else sys_
        pre = _join(self.prefix)
        suf = _join(self.suffix)
        ended = bool(self.prefix) and self.prefix[-1] == _END
        user = pre.replace(_END, "").strip() if ended else " ".join(x for x in (pre, "{…}", suf) if x)
        return (f"[{sys_}] " if sys_ else "") + user


def _join(tokens: Sequence[str]) -> str:
    return " ".join("⏎" if t == "\n" else t for t in tokens if t not in (_END, _START))


def _prefix_seq(masked: str, n: int, whole: bool) -> list[str]:
    toks = _TOKEN.findall(masked)
    seq = toks[:n]
    if whole and len(toks) <= n:
        seq.append(_END)
    return seq


def _suffix_seq(text: str, n: int, window: int) -> list[str]:
    tail = text[-window:]
    toks = _TOKEN.findall(mask_text(tail))
    cut = len(text) > window and not tail[:1].isspace()
    if cut and toks:
        toks = toks[1:]
    seq = toks[-n:][::-1]
    if not cut and len(toks) <= n:
        seq.append(_START)
    return seq


class TemplateMiner:
    """Prompt-template miner (see the module docstring for the method and why not drain3).

    Parameters
    ----------
    prefix_tokens : int, default=24
        Masked tokens of the user message's opening considered for the fixed prefix.
    suffix_tokens : int, default=16
        Tokens of the closing considered for the fixed suffix (when the prefix is empty).
    system_tokens : int, default=512
        Tokens of the system prompt considered for its fixed part.
    min_support : int, default=5
        Distinct messages a template step needs (at least; see ``min_share``).
    min_share : float, default=0.002
        ... and at least this share of the distinct messages under the same system prompt.
    max_fanout : int, default=8
        A node whose ``max_fanout`` most frequent next tokens cover 90 % of it is a fork.

    Attributes
    ----------
    templates_ : list of Template
        Largest first.
    labels_ : ndarray of int, shape (n_records,)
        The template index of each record given to ``fit``.

    Examples
    --------
    >>> from downsize.discover.readers import LogRecord
    >>> def rec(s, u): return LogRecord((("system", s), ("user", u)), "x", "gpt-4o")
    >>> words = "red green blue cyan teal pink gold gray navy lime plum rose sand wine jade ruby".split()
    >>> recs = [rec("Classify.", f"Ticket: {a} {b} shade") for a in words for b in words[:4]]
    >>> recs += [rec("Classify.", f"Summarise: {a} {b} again") for a in words for b in words[:4]]
    >>> m = TemplateMiner().fit(recs)
    >>> len(m.templates_), sorted(t.pattern() for t in m.templates_)
    (2, ['[Classify.] Summarise: {…} again', '[Classify.] Ticket: {…} shade'])
    """

    def __init__(self, *, prefix_tokens: int = 24, suffix_tokens: int = 16, system_tokens: int = 512,
                 min_support: int = 5, min_share: float = 0.002, max_fanout: int = 8) -> None:
        self.prefix_tokens = prefix_tokens
        self.suffix_tokens = suffix_tokens
        self.system_tokens = system_tokens
        self.min_support = min_support
        self.min_share = min_share
        self.max_fanout = max_fanout

    # -- fitting ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("prefix_tokens", "suffix_tokens", "system_tokens", "min_support", "max_fanout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
        if not (isinstance(self.min_share, (int, float)) and 0 <= self.min_share < 1):
            raise ValueError(f"min_share must be in [0, 1), got {self.min_share!r}")

    def _support(self, n: int) -> int:
        return max(self.min_support, int(np.ceil(self.min_share * n)))

    def fit(self, records: Sequence[LogRecord]) -> TemplateMiner:
        """Learn the templates of ``records`` (sets ``templates_`` and ``labels_``)."""
        self._check_params()
        self._mask_cache: dict[str, str] = {}
        systems = [self._masked_system(r.system) for r in records]
        texts = [r.text for r in records]
        distinct = dict.fromkeys(zip(systems, texts))  # each distinct (system, text) once
        sys_count = Counter(s for s, _ in distinct if s)
        self._sys_keys: dict[str, Any] = {}
        self._sys_trie = Trie(min_support=self.min_support, max_fanout=self.max_fanout, suffix=False,
                               fixed_masks=True).build([_prefix_seq(s, self.system_tokens, True) for s in sys_count],
                                                       list(sys_count.values()))
        groups: dict[Any, list[tuple[str, str]]] = {}
        for pair in distinct:
            groups.setdefault(self._system_key(pair[0]), []).append(pair)
        self._tries: dict[Any, tuple[Trie, Trie]] = {}
        for skey, group in groups.items():
            sup = self._support(len(group))
            seqs = [(self._user_prefix(t), self._suffix(t)) for _, t in group]
            pre = Trie(min_support=sup, max_fanout=self.max_fanout, suffix=False).build([a for a, _ in seqs])
            suf = Trie(min_support=sup, max_fanout=self.max_fanout, suffix=True).build([b for _, b in seqs])
            self._tries[skey] = (pre, suf)
            for pair, (ps, ss) in zip(group, seqs):
                distinct[pair] = self._walk(skey, ps, ss)
        keys = [distinct[pair] for pair in zip(systems, texts)]
        counts = Counter(keys)
        order = sorted(counts, key=lambda k: (-counts[k], str(k)))
        self._index = {k: i for i, k in enumerate(order)}
        self.labels_ = np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))
        members: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels_.tolist()):
            m = members.setdefault(lab, [])
            if len(m) < 400:
                m.append(i)
        self.templates_ = [
            Template(id=i, system=records[members[i][0]].system, prefix=k[1],
                     suffix=k[2] or self._common_suffix([texts[j] for j in members[i]]), count=counts[k], key=k)
            for i, k in enumerate(order)
        ]
        return self

    def _masked_system(self, s: str) -> str:
        m = self._mask_cache.get(s)
        if m is None:
            m = self._mask_cache[s] = " ".join(mask_text(s).split())
        return m

    def _system_key(self, masked: str) -> Any:
        if not masked:
            return ()
        key = self._sys_keys.get(masked)
        if key is None:
            key = self._sys_keys[masked] = self._sys_trie.walk(_prefix_seq(masked, self.system_tokens, True))
        return key

    def _user_prefix(self, text: str) -> list[str]:
        n = 12 * self.prefix_tokens  # characters for the tokens, mostly; twice as many when not
        seq = _prefix_seq(mask_text(text[:n]), self.prefix_tokens, len(text) <= n)
        if len(seq) < self.prefix_tokens and len(text) > n:
            seq = _prefix_seq(mask_text(text[: 4 * n]), self.prefix_tokens, len(text) <= 4 * n)
        return seq

    def _suffix(self, text: str) -> list[str]:
        return _suffix_seq(text, self.suffix_tokens, 12 * self.suffix_tokens)

    def _walk(self, skey: Any, prefix_seq: list[str], suffix_seq: list[str]) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
        tries = self._tries.get(skey)
        if tries is None:
            return (skey, ("<unseen>",), ())
        return (skey, tries[0].walk(prefix_seq), tries[1].walk(suffix_seq))

    def _key(self, masked_sys: str, text: str) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
        return self._walk(self._system_key(masked_sys), self._user_prefix(text), self._suffix(text))

    def _common_suffix(self, texts: list[str]) -> tuple[str, ...]:
        """Longest token suffix shared by ≥ 95 % of ``texts`` (for display and variable_text)."""
        seqs = [self._suffix(t) for t in texts]
        out: list[str] = []
        for depth in range(self.suffix_tokens):
            c = Counter(tuple(s[: depth + 1]) for s in seqs if len(s) > depth)
            if not c:
                break
            best, n = c.most_common(1)[0]
            if n < 0.95 * len(seqs) or best[-1] in MASKS or best[-1] == _START:
                break
            out = list(best)
        return tuple(out[::-1])

    # -- using ------------------------------------------------------------------------------
    def predict(self, records: Sequence[LogRecord]) -> np.ndarray:
        """Template index of each record (``-1``: a template not seen in ``fit``)."""
        if not hasattr(self, "templates_"):
            raise NotFittedError("this TemplateMiner is not fitted yet: call fit(records) first")
        keys = (self._key(self._masked_system(r.system), r.text) for r in records)
        return np.fromiter((self._index.get(k, -1) for k in keys), dtype=np.int64, count=len(records))

    def variable_text(self, record: LogRecord, template: Template) -> str:
        """The user message without the template's fixed prefix and suffix (the filled-in part)."""
        text = record.text
        spans = [m.span() for m in _TOKEN.finditer(text)]
        pre = [t for t in template.prefix if t != _END]
        suf = [t for t in template.suffix if t != _START]
        start = spans[len(pre) - 1][1] if pre and len(spans) >= len(pre) else 0
        end = spans[-len(suf)][0] if suf and len(spans) >= len(pre) + len(suf) else len(text)
        return text[start:end].strip()

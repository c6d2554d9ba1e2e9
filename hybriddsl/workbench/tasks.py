"""Synthetic sequence tasks that probe recall, generated on the fly (no downloads).

Every task makes ``(inputs, targets)`` of token ids, both ``[batch, seq_len]`` int64; ``targets`` is ``-100``
(PyTorch's ``ignore_index``) where no loss is taken. Accuracy is the fraction of scored positions whose argmax
prediction equals the target.

- :class:`MQAR` — multi-query associative recall (Arora et al. 2023, "Zoology: Measuring and Improving Recall
  in Efficient Language Models", §3). The sequence opens with ``N`` key-value pairs ``k1 v1 ... kN vN``
  (keys from the lower half of the vocabulary, values from the upper half, keys distinct); the rest holds every
  key once more, each followed by its value, at random pair-aligned positions among pad tokens (0). The loss is
  taken at each queried key: predict its value. Solving it needs a lookup into the context, which attention
  does exactly and a fixed-size recurrent state only approximately.
- :class:`SelectiveCopy` — selective copying (Gu & Dao 2023, "Mamba", §3.1 / Fig. 2; after the H3 paper's
  copying tasks). ``n`` data tokens scattered at random positions among noise tokens, then ``n`` marker
  tokens; at the ``i``-th marker predict the ``i``-th data token (in order).
- :class:`InductionHeads` — induction heads (Olsson et al. 2022; the H3 paper's synthetic, Fu et al. 2023 §3.1).
  A random sequence where a special token appears once followed by a key token; the last input is the special
  token again and the target there is that key.
- :class:`TextLM` — next-byte language modelling on a text file (byte level, vocabulary 256); every position
  is scored; the last tenth of the file is held out for evaluation when it is long enough.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybriddsl.errors import HybFileError, HybNameError, HybOptionError, Span, suggest

IGNORE = -100  # the targets' "no loss here" value (torch.nn.functional.cross_entropy's ignore_index)


def _opt_error(msg: str) -> HybOptionError:
    return HybOptionError(msg, Span.none("<command line>"))


class Task:
    """A generator of ``(inputs [B, T], targets [B, T])`` token batches with ``vocab`` token ids.

    ``batch(batch_size, generator)`` draws only from ``generator`` (a ``torch.Generator`` on the CPU), so one
    seed gives the same data order to every architecture.
    """

    name: str = ""
    vocab: int = 0
    seq_len: int = 0

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs [batch_size, seq_len] int64, targets [batch_size, seq_len] int64 with IGNORE unscored)."""
        raise NotImplementedError

    def eval_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A held-out batch (the same distribution for the synthetic tasks; held-out text for TextLM)."""
        return self.batch(batch_size, generator)

    def options(self) -> dict[str, Any]:
        """The task's settings, for result files."""
        return {"seq_len": self.seq_len, "vocab": self.vocab}

    @staticmethod
    def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(correct, scored): argmax of logits [B, T, V] equal to targets [B, T] at the scored positions."""
        mask = targets != IGNORE
        correct = (logits.argmax(-1) == targets) & mask
        return int(correct.sum()), int(mask.sum())


@dataclass
class MQAR(Task):
    """Multi-query associative recall (Zoology). Vocabulary: 0 pad, keys [1, vocab/2), values [vocab/2, vocab).

    Layout of one sequence (``N = num_kv_pairs``, ``T = seq_len``): positions ``0..2N-1`` hold
    ``k1 v1 ... kN vN``; the ``(T - 2N) // 2`` pair slots after them hold each key once (a random order) with
    its value right after it, in ``N`` randomly chosen slots, pad elsewhere. Target at a queried key = its value.
    """

    num_kv_pairs: int = 8
    seq_len: int = 64
    vocab: int = 128
    name: str = field(default="mqar", init=False)

    def __post_init__(self) -> None:
        n, t, v = self.num_kv_pairs, self.seq_len, self.vocab
        if n < 1:
            raise _opt_error(f"num_kv_pairs must be >= 1, got {n}")
        if t < 4 * n:
            raise _opt_error(
                f"seq_len {t} is too short for {n} key-value pairs: MQAR needs 4 * num_kv_pairs = {4 * n} "
                "positions (the pairs, then each key queried with its value)"
            )
        if v // 2 - 1 < n or v - v // 2 < n:
            raise _opt_error(f"vocab {v} is too small for {n} distinct keys: use vocab >= {2 * n + 2}")

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, v = self.num_kv_pairs, self.seq_len, self.vocab
        half = v // 2
        # distinct keys per row: the first n of a random permutation of [1, half)
        keys = torch.rand(batch_size, half - 1, generator=generator).argsort(-1)[:, :n] + 1
        values = torch.randint(half, v, (batch_size, n), generator=generator)
        seq = torch.zeros(batch_size, t, dtype=torch.long)
        seq[:, 0 : 2 * n : 2], seq[:, 1 : 2 * n : 2] = keys, values
        slots = (t - 2 * n) // 2
        # n distinct query slots per row (sorted: slot order is position order), each gets a random key
        slot = torch.rand(batch_size, slots, generator=generator).argsort(-1)[:, :n]
        which = torch.rand(batch_size, n, generator=generator).argsort(-1)  # which pair each query asks for
        pos = 2 * n + 2 * slot
        rows = torch.arange(batch_size).unsqueeze(1)
        seq[rows, pos] = keys.gather(1, which)
        seq[rows, pos + 1] = values.gather(1, which)
        targets = torch.full_like(seq, IGNORE)
        targets[rows, pos] = values.gather(1, which)
        return seq, targets

    def options(self) -> dict[str, Any]:
        return {"num_kv_pairs": self.num_kv_pairs, "seq_len": self.seq_len, "vocab": self.vocab}


@dataclass
class SelectiveCopy(Task):
    """Selective copying (Mamba §3.1). Vocabulary: 0 noise, 1 marker, data tokens [2, vocab).

    The first ``seq_len - num_tokens`` positions are noise with ``num_tokens`` data tokens at random positions;
    the last ``num_tokens`` positions are markers, and at the i-th marker the target is the i-th data token.
    """

    num_tokens: int = 8
    seq_len: int = 64
    vocab: int = 16
    name: str = field(default="selective_copy", init=False)

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise _opt_error(f"num_tokens must be >= 1, got {self.num_tokens}")
        if self.seq_len < 2 * self.num_tokens:
            raise _opt_error(
                f"seq_len {self.seq_len} is too short to copy {self.num_tokens} tokens: "
                f"selective copying needs at least 2 * num_tokens = {2 * self.num_tokens} positions"
            )
        if self.vocab < 3:
            raise _opt_error(f"vocab must be >= 3 (noise, marker and at least one data token), got {self.vocab}")

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = self.num_tokens, self.seq_len
        ctx = t - n
        data = torch.randint(2, self.vocab, (batch_size, n), generator=generator)
        pos = torch.rand(batch_size, ctx, generator=generator).argsort(-1)[:, :n].sort(-1).values
        seq = torch.zeros(batch_size, t, dtype=torch.long)
        rows = torch.arange(batch_size).unsqueeze(1)
        seq[rows, pos] = data
        seq[:, ctx:] = 1
        targets = torch.full_like(seq, IGNORE)
        targets[:, ctx:] = data
        return seq, targets

    def options(self) -> dict[str, Any]:
        return {"num_tokens": self.num_tokens, "seq_len": self.seq_len, "vocab": self.vocab}


@dataclass
class InductionHeads(Task):
    """Induction heads (Olsson et al. 2022; H3 §3.1). Vocabulary: 1 the special token, others [2, vocab).

    Random tokens; the special token at one random position ``p < seq_len - 2`` followed by the key at ``p+1``;
    the last input is the special token, and the target there (the only scored position) is the key.
    """

    seq_len: int = 64
    vocab: int = 32
    name: str = field(default="induction", init=False)

    def __post_init__(self) -> None:
        if self.seq_len < 4:
            raise _opt_error(f"seq_len must be >= 4 for induction heads, got {self.seq_len}")
        if self.vocab < 4:
            raise _opt_error(f"vocab must be >= 4 for induction heads, got {self.vocab}")

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.seq_len
        seq = torch.randint(2, self.vocab, (batch_size, t), generator=generator)
        p = torch.randint(0, t - 2, (batch_size,), generator=generator)
        rows = torch.arange(batch_size)
        seq[rows, p] = 1
        seq[:, -1] = 1
        targets = torch.full_like(seq, IGNORE)
        targets[:, -1] = seq[rows, p + 1]
        return seq, targets


class TextLM(Task):
    """Next-byte prediction on a text file: random windows; target[t] = input[t+1]. Vocabulary 256 (bytes).

    The file's last tenth is the evaluation split when it holds at least one window, else the whole file is
    used for both (a small file: the reported accuracy is then training accuracy).
    """

    name = "text"

    def __init__(self, path: str | os.PathLike, seq_len: int = 64):
        p = Path(path)
        span = Span.none(str(p))
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise HybFileError(f"no such text file: {p}", span) from None
        except IsADirectoryError:
            raise HybFileError(f"{p} is a directory, not a text file", span) from None
        except OSError as e:
            raise HybFileError(f"cannot read {p}: {e.strerror}", span) from None
        if len(data) < seq_len + 1:
            raise HybFileError(
                f"{p} has {len(data)} bytes: too short for one window of seq_len {seq_len} (+1 for the target)",
                span,
            )
        self.path, self.seq_len, self.vocab = str(p), seq_len, 256
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        cut = int(len(data) * 0.9)
        if len(data) - cut >= seq_len + 1:
            self.train_data, self.eval_data = self.data[:cut], self.data[cut:]
        else:
            self.train_data = self.eval_data = self.data

    def _windows(self, data: torch.Tensor, b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.randint(0, len(data) - self.seq_len, (b,), generator=g)
        idx = start.unsqueeze(1) + torch.arange(self.seq_len + 1)
        win = data[idx]
        return win[:, :-1].contiguous(), win[:, 1:].contiguous()

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.train_data, batch_size, generator)

    def eval_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.eval_data, batch_size, generator)

    def options(self) -> dict[str, Any]:
        return {"text": self.path, "seq_len": self.seq_len, "vocab": self.vocab}


TASKS = {"mqar": MQAR, "selective_copy": SelectiveCopy, "induction": InductionHeads, "text": TextLM}
ALIASES = {"copy": "selective_copy", "selective-copy": "selective_copy", "induction_heads": "induction"}


def make_task(name: str, seq_len: int | None = None, text: str | os.PathLike | None = None, **opts: Any) -> Task:
    """A task by name (``mqar``, ``selective_copy``, ``induction``, ``text``) with options; ``None`` options
    take the task's defaults. ``text`` is the file for the ``text`` task. Unknown names raise HybNameError."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise HybNameError(
            f"unknown task '{name}'{suggest(name, list(TASKS))} (tasks: {', '.join(TASKS)})",
            Span.none("<command line>"),
        )
    given = {k: v for k, v in opts.items() if v is not None}
    if seq_len is not None:
        given["seq_len"] = seq_len
    if key == "text":
        if text is None:
            raise _opt_error("the text task needs a file: --text FILE")
        extra = set(given) - {"seq_len"}
        if extra:
            raise _opt_error(f"the text task takes no option {', '.join(sorted(extra))}")
        return TextLM(text, **given)
    if text is not None:
        raise _opt_error(f"--text is for the text task, not '{key}'")
    cls = TASKS[key]
    known = {f for f in cls.__dataclass_fields__ if f != "name"}
    extra = set(given) - known
    if extra:
        raise _opt_error(
            f"task '{key}' takes no option {', '.join(sorted(extra))} (its options: {', '.join(sorted(known))})"
        )
    for k, v in given.items():
        if not isinstance(v, int) or v < 1:
            raise _opt_error(f"{k} must be a positive integer, got {v!r}")
    return cls(**given)

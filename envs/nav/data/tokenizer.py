"""Word-level tokenizer and vocabulary for navigation instructions.

Instructions are lower-cased and split into words (contractions such as ``don't`` stay whole) and
single punctuation marks, as the R2R code bases do. The vocabulary file ``vocab.txt`` holds one token
per line; its first lines are the special tokens in :data:`SPECIAL_TOKENS`, so their ids are fixed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from lodestar.envs.nav.data.r2r import load_r2r

PAD, UNK, BOS, EOS, MASK, CLS = "<PAD>", "<UNK>", "<BOS>", "<EOS>", "<MASK>", "<CLS>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, MASK, CLS)
VOCAB_FILE = "vocab.txt"
VOCAB_MIN_COUNT = 5  # rarer train words are <UNK>, as in R2R-EnvDrop

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", ")"}


def tokenize(text: str) -> list[str]:
    """Split an instruction into lower-case word and punctuation tokens."""
    return _TOKEN_RE.findall(text.lower())


class Vocab:
    """A word <-> id mapping whose first ids are the special tokens.

    ``encode`` maps unknown words to ``<UNK>``; ``decode`` stops at ``<EOS>`` and drops the other
    special tokens unless asked to keep them.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        self.tokens = tokens
        self.index = {tok: i for i, tok in enumerate(tokens)}
        if len(self.index) != len(tokens):
            dup = [tok for tok, n in Counter(tokens).items() if n > 1]
            raise ValueError(f"vocabulary has duplicate tokens: {dup[:10]}")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.mask_id, self.cls_id = range(6)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 5, max_size: int | None = None) -> Vocab:
        """Vocabulary of the words occurring at least ``min_count`` times (most frequent first)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text))
        # Sort by count then alphabetically so the file is deterministic.
        words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        words = [w for w in words if w not in SPECIAL_TOKENS]
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls([*SPECIAL_TOKENS, *words])

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        tokens = path.read_text(encoding="utf-8").splitlines()
        while tokens and tokens[-1] == "":
            tokens.pop()
        try:
            return cls(tokens)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def token_to_id(self, token: str) -> int:
        return self.index.get(token, self.unk_id)

    def id_to_token(self, idx: int) -> str:
        if not 0 <= idx < len(self.tokens):
            raise IndexError(f"token id {idx} out of range for a vocabulary of {len(self.tokens)}")
        return self.tokens[idx]

    def encode(
        self, text: str, max_len: int | None = None, add_bos: bool = True, add_eos: bool = True
    ) -> list[int]:
        """Token ids of ``text``; when longer than ``max_len`` the words are cut, ``<EOS>`` is kept."""
        ids = [self.token_to_id(tok) for tok in tokenize(text)]
        head = [self.bos_id] if add_bos else []
        tail = [self.eos_id] if add_eos else []
        if max_len is not None:
            if max_len < len(head) + len(tail):
                raise ValueError(f"max_len {max_len} leaves no room for the BOS/EOS tokens")
            ids = ids[: max_len - len(head) - len(tail)]
        return head + ids + tail

    def encode_batch(
        self,
        texts: Sequence[str],
        max_len: int,
        add_bos: bool = True,
        add_eos: bool = True,
        device: torch.device | str = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``[B, max_len]`` int64 ids and the bool mask of real tokens."""
        ids = torch.full((len(texts), max_len), self.pad_id, dtype=torch.int64)
        for row, text in enumerate(texts):
            encoded = self.encode(text, max_len, add_bos, add_eos)
            ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.int64)
        ids = ids.to(device)
        return ids, ids != self.pad_id

    def decode(self, ids: Iterable[int], keep_special: bool = False) -> str:
        """Text of ``ids`` up to the first ``<EOS>``; punctuation is attached to the previous word."""
        words: list[str] = []
        for idx in ids:
            idx = int(idx)
            if idx == self.eos_id and not keep_special:
                break
            token = self.id_to_token(idx)
            if token in SPECIAL_TOKENS and not keep_special:
                continue
            words.append(token)
        text = ""
        for word in words:
            text += word if (not text or word in _NO_SPACE_BEFORE) else " " + word
        return text


def build_vocab(
    dataset_dir: str | Path,
    split: str = "train",
    min_count: int = VOCAB_MIN_COUNT,
    max_size: int | None = None,
    write: bool = True,
) -> Vocab:
    """Build the vocabulary from ``R2R_<split>.json`` of a dataset directory; ``write`` saves it as
    ``vocab.txt`` there (what a world builder does; stages reading a user's folder never write it)."""
    dataset_dir = Path(dataset_dir)
    episodes = load_r2r(dataset_dir / f"R2R_{split}.json")
    vocab = Vocab.build((text for ep in episodes for text in ep.instructions), min_count, max_size)
    if write:
        vocab.save(dataset_dir / VOCAB_FILE)
    return vocab

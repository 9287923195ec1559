"""Caption normalisation, WordPiece tokenisation and GroundingDINO's sub-sentence masks.

The bert-base-uncased vocabulary ships with the package (`bert_uncased_vocab.txt`, Apache-2.0, see NOTICE),
so tokenising never downloads anything.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch

logger = logging.getLogger(__name__)

#: token ids that close a sub-sentence: [CLS], [SEP], ".", "?"
SPECIAL_TOKEN_IDS = (101, 102, 1012, 1029)


@dataclass
class TokenizedText:
    """Model-ready text for a batch of B captions of (padded) length L."""

    input_ids: torch.Tensor  #: (B, L) int64
    token_mask: torch.Tensor  #: (B, L) bool, True on real tokens (the tokenizer's attention mask)
    self_attention_mask: torch.Tensor  #: (B, L, L) bool, True = may attend (sub-sentence blocks)
    position_ids: torch.Tensor  #: (B, L) int64, restarting at 0 in every sub-sentence
    captions: list[str]

    def to(self, device: torch.device | str) -> "TokenizedText":
        return TokenizedText(
            self.input_ids.to(device),
            self.token_mask.to(device),
            self.self_attention_mask.to(device),
            self.position_ids.to(device),
            self.captions,
        )


class ExpressionError(ValueError):
    """An expression that cannot be segmented (e.g. empty)."""


def normalize_caption(text: str) -> str:
    """Collapse whitespace and append "." unless the caption already ends with one (official behaviour)."""
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a string, got {type(text).__name__}")
    caption = " ".join(text.split())
    if not caption:
        raise ExpressionError("expression is empty: give a sentence that describes the object")
    if not caption.endswith("."):
        caption = caption + "."
    return caption


@lru_cache(maxsize=1)
def get_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import BertTokenizerFast

    lines = resources.files("referdino.processing").joinpath("bert_uncased_vocab.txt").read_text("utf-8")
    vocab = {token: i for i, token in enumerate(lines.splitlines())}
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    else:  # transformers 4.x reads a file
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(lines)
        tokenizer = BertTokenizerFast(vocab_file=f.name, do_lower_case=True, tokenize_chinese_chars=True)
        os.unlink(f.name)
    if tokenizer.convert_tokens_to_ids("[CLS]") != 101:
        raise RuntimeError("the bundled BERT vocabulary did not load (expected [CLS] = 101)")
    return tokenizer


def sub_sentence_masks(input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-diagonal self-attention mask and restarting position ids (GroundingDINO).

    Every span that ends with an interior special token attends within itself; tokens at position 0 and
    L-1 (and any token not inside such a span) attend only to themselves and get position 0.
    """
    b, length = input_ids.shape
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for tid in SPECIAL_TOKEN_IDS:
        special |= input_ids == tid
    mask = torch.eye(length, dtype=torch.bool, device=input_ids.device).repeat(b, 1, 1)
    position_ids = torch.zeros_like(input_ids)
    for row in range(b):
        prev = 0
        for col in special[row].nonzero().flatten().tolist():
            if 0 < col < length - 1:
                mask[row, prev + 1 : col + 1, prev + 1 : col + 1] = True
                position_ids[row, prev + 1 : col + 1] = torch.arange(col - prev, device=input_ids.device)
            prev = col
    return mask, position_ids


def tokenize(expressions: list[str], max_text_len: int = 256) -> TokenizedText:
    """Normalise and tokenise a batch of expressions (padded to the longest one)."""
    if not expressions:
        raise ExpressionError("no expression given: pass at least one sentence")
    captions = [normalize_caption(t) for t in expressions]
    enc = get_tokenizer()(captions, padding="longest", return_tensors="pt")
    input_ids = enc["input_ids"]
    token_mask = enc["attention_mask"].bool()
    mask, position_ids = sub_sentence_masks(input_ids)
    if input_ids.shape[1] > max_text_len:
        logger.warning(
            "expression has %d tokens, more than the %d the model reads: the rest is ignored",
            input_ids.shape[1],
            max_text_len,
        )
        input_ids = input_ids[:, :max_text_len]
        token_mask = token_mask[:, :max_text_len]
        mask = mask[:, :max_text_len, :max_text_len]
        position_ids = position_ids[:, :max_text_len]
    return TokenizedText(input_ids, token_mask, mask, position_ids, captions)

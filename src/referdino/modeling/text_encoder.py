"""BERT text encoder with GroundingDINO's sub-sentence attention, projected to the model width."""

from __future__ import annotations

import torch
from torch import nn

from ..config import TextConfig


class TextEncoder(nn.Module):
    """`transformers.BertModel` built from a config (never downloaded) plus a linear projection.

    BERT receives the sub-sentence block mask as its self-attention mask and the restarting position ids.
    """

    def __init__(self, config: TextConfig, d_model: int) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        bert_config = BertConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            hidden_act="gelu",
            layer_norm_eps=1e-12,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
        )
        self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.projection = nn.Linear(config.hidden_size, d_model)

    def forward(
        self, input_ids: torch.Tensor, self_attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (BERT last hidden state (B, L, hidden), projected features (B, L, d_model))."""
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=self_attention_mask[:, None, :, :],  # (B, 1, L, L) bool: True = attend
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=position_ids,
        ).last_hidden_state
        return hidden, self.projection(hidden)

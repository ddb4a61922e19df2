"""MPNet encoders: BERT's block layout; no SDPA path in transformers, and position ids that
start after the padding index."""

from probes.families import register
from probes.families.bert import Bert


@register
class MPNet(Bert):
    model_type = "mpnet"
    attention = "eager"
    onnx_fusion = None  # relative position bias: not the BERT attention pattern

    def max_positions(self, config) -> int:
        return config.max_position_embeddings - (config.pad_token_id + 1)

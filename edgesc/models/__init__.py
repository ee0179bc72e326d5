"""edgesc.models: the semantic codec built from presets (docs/contract.md "Model API").

```python
cfg = edgesc.config.load_preset("recvit")
model = build_model(cfg)                         # SemanticCodec, training form
out = model(images, Controls(snr_db=10.0), channel)
enc = model.encoder.inference()                  # InferenceEncoder (exportable, skipped work not computed)
dec = model.decoder.inference()                  # InferenceDecoder
```
"""
from __future__ import annotations

from edgesc.config import ModelConfig

from .codec import CodecOutput, Controls, SemanticCodec, SemanticDecoder, SemanticEncoder
from .inference import InferenceDecoder, InferenceEncoder, control_names

__all__ = [
    "build_model", "Controls", "CodecOutput", "SemanticCodec", "SemanticEncoder", "SemanticDecoder",
    "InferenceEncoder", "InferenceDecoder", "control_names",
]


def build_model(cfg: ModelConfig) -> SemanticCodec:
    """Build the training-form codec of a validated preset (``edgesc.config.load_preset``)."""
    return SemanticCodec(cfg)

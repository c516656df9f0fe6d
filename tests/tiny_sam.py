"""A tiny, randomly initialised SAM checkpoint written in code (nothing is downloaded), for the
SAM segmentation tests, the CLI's --sam and bench/reproduce.py's Table 4 SAM row."""

from __future__ import annotations

from pathlib import Path


def save_tiny_sam(folder: str | Path, seed: int = 0, scale: float = 1.0, processor: bool = True) -> Path:
    """Save a ~80k-parameter SamModel (64-px input, 8×8 image embedding) and, with ``processor``,
    a SamProcessor sized to it into ``folder``. ``scale`` multiplies the mask decoder's weights:
    a random init gives near-zero logits, larger weights give confident masks."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                           patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64,
                           initializer_range=0.02),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    model = SamModel(config).eval()
    if scale != 1.0:
        with torch.no_grad():
            for p in model.mask_decoder.parameters():
                p.mul_(scale)
    model.save_pretrained(folder)
    if processor:
        image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
        SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return Path(folder)

"""Optional global condition of ``dit`` from a pre-trained DINOv2 image encoder.

MicroDiffuse3D conditions its transformer globally on DINOv2 features of the low-quality
volume. Here that is an option (``RestoreDiT(global_encoder="facebook/dinov2-small")`` or a
local folder with a saved model): the encoder is loaded through ``transformers`` (which uses
the Hugging Face Hub and its cache), kept frozen, and never stored in the dit's weights, so a
dit trained with it fetches the same encoder again when it is loaded. The default global
condition is the built-in one (pooled local features), which needs nothing from the Hub.

What the encoder sees: ``planes`` evenly spaced planes of the (upsampled) low-quality slab,
mapped from [-1, 1] to [0, 1], repeated to RGB, normalised with the encoder's ImageNet
statistics and resized to its training size; their CLS (pooler) features are averaged and
projected to the dit's width by a zero-initialised linear layer, so a dit starts as if the
condition were absent.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet statistics DINOv2 was trained with.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def load_dinov2(spec: str) -> nn.Module:
    """A frozen DINOv2 model from a Hub repo id or a local folder, with a message saying what to do when it fails."""
    from ..errors import VoxreconError

    try:
        from transformers import AutoModel
    except ImportError as err:
        raise VoxreconError(
            f"the DINOv2 global condition ({spec}) needs the transformers package: pip install 'napari-voxrecon[dinov2]'") from err
    try:
        model = AutoModel.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise VoxreconError(
            f"could not load the DINOv2 encoder {spec!r}: {err}. Give a Hub repo id such as facebook/dinov2-small "
            "(it must be in the Hugging Face cache when offline) or a folder saved with save_pretrained.") from err
    if getattr(model.config, "model_type", "") != "dinov2":
        raise VoxreconError(f"{spec!r} is a {model.config.model_type!r} model, not DINOv2.")
    return model.eval().requires_grad_(False)


class Dinov2GlobalCondition(nn.Module):
    """(B, D, H, W) low-quality slab in [-1, 1] -> (B, dim) global condition."""

    def __init__(self, spec: str, dim: int, planes: int = 4) -> None:
        super().__init__()
        # held outside the module tree: not trained, not saved with the dit, not counted as its parameters
        self._encoder: list[Any] = [load_dinov2(spec)]
        self.planes = planes
        cfg = self._encoder[0].config
        self.image_size = int(cfg.image_size)
        self.proj = nn.Linear(int(cfg.hidden_size), dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @property
    def encoder(self) -> nn.Module:
        return self._encoder[0]

    def features(self, lq: torch.Tensor) -> torch.Tensor:
        """(B, hidden): mean CLS feature of ``planes`` evenly spaced planes."""
        b, d = lq.shape[:2]
        idx = torch.linspace(0, d - 1, min(self.planes, d), device=lq.device).round().long()
        img = ((lq[:, idx].clamp(-1, 1) + 1) / 2).flatten(0, 1)[:, None]  # (B*k, 1, H, W) in [0, 1]
        img = F.interpolate(img, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        mean = torch.tensor(_MEAN, device=lq.device).view(1, 3, 1, 1)
        std = torch.tensor(_STD, device=lq.device).view(1, 3, 1, 1)
        img = (img.expand(-1, 3, -1, -1) - mean) / std
        enc = self.encoder
        if next(enc.parameters()).device != lq.device:
            enc.to(lq.device)
        with torch.no_grad():
            out = enc(pixel_values=img.to(next(enc.parameters()).dtype))
        return out.pooler_output.float().reshape(b, -1, out.pooler_output.shape[-1]).mean(1)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(lq))

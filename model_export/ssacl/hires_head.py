"""High-resolution entity branch: a small CNN that reads the radiograph at twice the encoder's
input side, for findings a few pixels wide at 224 px (a clavicle break, a pleural line).

The ViT sees 16 px patches of a 224 px image; a non-displaced clavicle fracture there is a
lucent line under one pixel wide. This branch reads the same image at 448 px through five
stride-2 convolutions down to the encoder's 14 x 14 grid, one logit per label per cell,
log-sum-exp pooled per image like ``entity_head.PatchEntityHead``. Its image logits are fused
with the encoder's per label (``export.hires_fit``); it never touches maps or the prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_export.ssacl.entity_head import lse_pool

#: Channels after each stride-2 stage (448 -> 224 -> 112 -> 56 -> 28 -> 14 px).
WIDTHS = (8, 16, 32, 64, 128)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()
    )


class HiResEntityCNN(nn.Module):
    """(B, 1, 448, 448) normalised image -> image logits (B, C), cell logits (B, 196, C).

    Stages 1-2 are one stride-2 convolution each; stages 3-5 a stride-2 and a stride-1
    convolution (3 x 3, batch norm, GELU); then a 1 x 1 convolution to ``num_labels``.
    """

    def __init__(self, num_labels: int, sharpness: float, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.sharpness = sharpness
        layers: list[nn.Module] = [_conv(1, widths[0], 2)]
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
            layers += [_conv(a, b, 2)] + ([_conv(b, b, 1)] if k > 0 else [])
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], num_labels, 1)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        cells = self.head(self.body(image)).flatten(2).transpose(1, 2)  # (B, N, C)
        return lse_pool(cells, self.sharpness), cells

    @staticmethod
    def cell_targets(masks: Tensor) -> Tensor:
        """(B, C, 2g, 2g) finding masks -> (B, N, C) targets on the (g, g) cell grid."""
        return F.max_pool2d(masks, 2).flatten(2).transpose(1, 2)


class StripEntityCNN(nn.Module):
    """A few labels read from the top of the image at 16 px cells: (B, 1, S, S) normalised
    image -> image logits (B, C) and cell logits (B, N, C), zero for the labels it does not
    read (``label_ids`` are the ones it does; fusion leaves the others alone).

    Made for the clavicle fracture: a lucent line one or two pixels wide at 448 px, which
    the whole-image CNN above pools away. Only the top ``rows`` of the image are read (the
    clavicles and apices), at twice the whole-image CNN's cell density; stride-2 and
    stride-1 3 x 3 convolutions alternate down to 1/16 of the side.
    """

    widths = (16, 16, 32, 32, 64, 64, 64)
    strides = (2, 1, 2, 1, 2, 1, 2)

    def __init__(
        self, num_labels: int, label_ids: tuple[int, ...], rows: float, sharpness: float
    ) -> None:
        super().__init__()
        self.sharpness, self.rows = sharpness, rows
        layers, cin = [], 1
        for w, s in zip(self.widths, self.strides, strict=True):
            layers.append(_conv(cin, w, s))
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, len(label_ids), 1)
        scatter = torch.zeros(len(label_ids), num_labels)
        scatter[torch.arange(len(label_ids)), torch.tensor(label_ids)] = 1.0
        self.register_buffer("scatter", scatter)  # (K, C): own label k -> label column

    def grid_rows(self, side: int) -> int:
        """Cell rows read from an image of ``side`` px (16 px cells)."""
        return max(1, round(self.rows * side / 16))

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        top = image[:, :, : 16 * self.grid_rows(int(image.shape[-2]))]  # fixed side in ONNX
        own = self.head(self.body(top)).flatten(2).transpose(1, 2)  # (B, N, K)
        scatter = self.scatter
        assert isinstance(scatter, Tensor)
        return lse_pool(own, self.sharpness) @ scatter, own @ scatter

    def cell_targets(self, masks: Tensor) -> Tensor:
        """(B, C, S/16, S/16) finding masks -> (B, N, C) targets of the cells read."""
        return masks[:, :, : self.grid_rows(16 * masks.shape[-2])].flatten(2).transpose(1, 2)

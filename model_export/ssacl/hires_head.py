"""High-resolution entity branch: a small CNN that reads the radiograph at twice the encoder's
input side, for findings a few pixels wide at 224 px (a clavicle break, a pleural line).

The ViT sees 16 px patches of a 224 px image; a non-displaced clavicle fracture there is a
lucent line under one pixel wide. This branch reads the same image at 448 px through five
stride-2 convolutions down to the encoder's 14 x 14 grid, one logit per label per cell,
log-sum-exp pooled per image like ``entity_head.PatchEntityHead``. Its image logits are fused
with the encoder's per label (``export.hires_fit``); it never touches maps or the prefix.
"""

from __future__ import annotations

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

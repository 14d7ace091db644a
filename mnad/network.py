"""The MNAD network: a U-Net-like encoder, the memory, and a decoder (Park et al., Sec. 3.1).

Encoder: four stages of (conv3x3, BN, ReLU) x 2 with widths w1..w4 (64, 128, 256, 512 at
width multiplier 1), max-pool 2 between them; the last stage ends after its second conv.
Skips are the outputs of stages 1..3. Output: a query map (B, w4, H/8, W/8).

Decoder, prediction variant: (conv, BN, ReLU) x 2 from 2*w4 to w4; then, at each of three
scales, a transposed conv (stride 2, + BN, ReLU), the skip of that scale concatenated in
front, and (conv, BN, ReLU) x 2; the head is (conv, BN, ReLU) x 2 and a conv to the image
channels, with tanh. The reconstruction variant has no skips: a transposed conv keeping the
width, then (conv, BN, ReLU) x 2 narrowing it, at each scale.

The layers are nn.Sequential with the same positions as the paper's code, so that a
checkpoint of that code maps onto this one by renaming (see ``mnad.paper_import``).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mnad import memory as mem
from mnad.config import ModelConfig


def conv_block(c_in: int, c_out: int, last_activation: bool = True) -> nn.Sequential:
    """(conv3x3, BN, ReLU) x 2; without the final BN and ReLU when ``last_activation`` is off."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
    ]
    if last_activation:
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


def upsample(c_in: int, c_out: int) -> nn.Sequential:
    """Transposed conv 3x3, stride 2 (doubles H and W), BN, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def head(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    """(conv, BN, ReLU) x 2, conv to the image channels, tanh."""
    return nn.Sequential(
        *conv_block(c_in, c_mid),
        nn.Conv2d(c_mid, c_out, 3, padding=1),
        nn.Tanh(),
    )


class Encoder(nn.Module):
    def __init__(self, c_in: int, widths: tuple[int, int, int, int]):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stage1 = conv_block(c_in, w1)
        self.stage2 = conv_block(w1, w2)
        self.stage3 = conv_block(w2, w3)
        self.stage4 = conv_block(w3, w4, last_activation=False)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s1 = self.stage1(x)  # (B, w1, H, W)
        s2 = self.stage2(self.pool(s1))  # (B, w2, H/2, W/2)
        s3 = self.stage3(self.pool(s2))  # (B, w3, H/4, W/4)
        features = self.stage4(self.pool(s3))  # (B, w4, H/8, W/8)
        return features, s1, s2, s3


class PredictionDecoder(nn.Module):
    def __init__(self, c_out: int, widths: tuple[int, int, int, int]):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.bottleneck = conv_block(2 * w4, w4)
        self.up3 = upsample(w4, w3)
        self.block3 = conv_block(2 * w3, w3)
        self.up2 = upsample(w3, w2)
        self.block2 = conv_block(2 * w2, w2)
        self.up1 = upsample(w2, w1)
        self.head = head(2 * w1, w1, c_out)

    def forward(self, z: Tensor, s1: Tensor, s2: Tensor, s3: Tensor) -> Tensor:
        x = self.bottleneck(z)  # (B, w4, H/8, W/8)
        x = self.block3(torch.cat([s3, self.up3(x)], dim=1))  # (B, w3, H/4, W/4)
        x = self.block2(torch.cat([s2, self.up2(x)], dim=1))  # (B, w2, H/2, W/2)
        return self.head(torch.cat([s1, self.up1(x)], dim=1))  # (B, c_out, H, W)


class ReconstructionDecoder(nn.Module):
    def __init__(self, c_out: int, widths: tuple[int, int, int, int]):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.bottleneck = conv_block(2 * w4, w4)
        self.up3 = upsample(w4, w4)
        self.block3 = conv_block(w4, w3)
        self.up2 = upsample(w3, w3)
        self.block2 = conv_block(w3, w2)
        self.up1 = upsample(w2, w2)
        self.head = head(w2, w1, c_out)

    def forward(self, z: Tensor, s1: Tensor, s2: Tensor, s3: Tensor) -> Tensor:
        x = self.bottleneck(z)  # (B, w4, H/8, W/8)
        x = self.block3(self.up3(x))  # (B, w3, H/4, W/4)
        x = self.block2(self.up2(x))  # (B, w2, H/2, W/2)
        return self.head(self.up1(x))  # (B, c_out, H, W)


class Encoded(NamedTuple):
    """The encoder's output: the query map and the three skips."""

    features: Tensor  # (B, c, h, w) before normalisation
    s1: Tensor  # (B, w1, H, W)
    s2: Tensor  # (B, w2, H/2, W/2)
    s3: Tensor  # (B, w3, H/4, W/4)

    def select(self, index: slice | Tensor) -> Encoded:
        """The same frames' rows of every part."""
        return Encoded(*(t[index] for t in self))


class Decoded(NamedTuple):
    """Memory read plus decoder for encoded frames."""

    prediction: Tensor  # (B, C, H, W) on [-1, 1]
    queries: Tensor  # (B*h*w, c) unit queries
    feature_distance: Tensor  # (B,) compactness of each sample's queries


class TrainOutput(NamedTuple):
    """A training-mode forward pass."""

    prediction: Tensor  # (B, C, H, W) on [-1, 1]
    features: Tensor  # (B, c, h, w) encoder map before normalisation
    queries: Tensor  # (B*h*w, c) unit queries, detached: what the memory update uses
    compactness: Tensor  # () loss
    separateness: Tensor  # () loss


class EvalOutput(NamedTuple):
    """An eval-mode forward pass: what the scorer needs, memory unchanged."""

    prediction: Tensor  # (B, C, H, W) on [-1, 1]
    features: Tensor  # (B, c, h, w)
    queries: Tensor  # (B*h*w, c)
    feature_distance: Tensor  # (B,) compactness of each sample's queries


class MNAD(nn.Module):
    """Encoder, memory and decoder; the memory is a buffer in the state_dict."""

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        widths = config.widths
        c_in = config.channels * config.input_frames
        self.encoder = Encoder(c_in, widths)
        self.memory = mem.Memory(config.memory_size, config.feature_dim, generator)
        decoder = PredictionDecoder if config.task == "pred" else ReconstructionDecoder
        self.decoder = decoder(config.channels, widths)

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        expected = (cfg.channels * cfg.input_frames, cfg.height, cfg.width)
        # Any spatial size divisible by 8 works (the network is fully convolutional);
        # the channel count must be exact.
        assert x.ndim == 4 and x.shape[1] == expected[0], (
            f"input must be (B, {expected[0]}, H, W), got {tuple(x.shape)}"
        )
        assert x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0, (
            f"input height and width must be divisible by 8, got {tuple(x.shape[2:])}"
        )

    def _memory(self, features: Tensor, items: Tensor | None = None) -> mem.MemoryOutput:
        # The memory runs in float32 also under bf16 autocast: softmax over N queries and
        # unit-norm items need the precision.
        with torch.autocast(features.device.type, enabled=False):
            return self.memory(features.float(), items)

    def encode(self, x: Tensor) -> Encoded:
        """The encoder alone: it does not depend on the memory, so it batches freely."""
        self._check_input(x)
        return Encoded(*self.encoder(x))

    def decode(self, encoded: Encoded, items: Tensor | None = None) -> Decoded:
        """Memory read and decoder for encoded frames, in eval terms: memory unchanged.

        ``items`` (M, C) overrides the memory read from, as a scorer that keeps its own
        memory state needs; by default the model's own memory.
        """
        m = self._memory(encoded.features, items)
        z = m.decoder_input.to(encoded.features.dtype)  # (B, 2c, h, w)
        prediction = self.decoder(z, encoded.s1, encoded.s2, encoded.s3)  # (B, C, H, W)
        used = self.memory.items if items is None else items
        distance = mem.distance_per_sample(m.queries, used, encoded.features.shape[0])
        return Decoded(prediction, m.queries, distance)

    def forward(self, x: Tensor, update_memory: bool = True) -> TrainOutput | EvalOutput:
        """x: (B, C*T, H, W) on [-1, 1], frames stacked on the channel axis.

        In training mode the memory is updated with this batch's queries after the read
        (the paper's behaviour) unless ``update_memory`` is off, which a distributed
        trainer uses to update from the queries of the global batch instead.
        In eval mode the memory is never changed here: test-time updates are the scorer's.
        """
        enc = self.encode(x)
        if not self.training:
            dec = self.decode(enc)
            return EvalOutput(dec.prediction, enc.features, dec.queries, dec.feature_distance)
        m = self._memory(enc.features)
        z = m.decoder_input.to(enc.features.dtype)  # (B, 2c, h, w)
        prediction = self.decoder(z, enc.s1, enc.s2, enc.s3)  # (B, C, H, W)
        items = self.memory.items
        compact = mem.compactness(m.queries, items, m.nearest)
        separate = mem.separateness(m.queries, items, m.nearest, m.second)
        queries = m.queries.detach()
        if update_memory:
            self.memory.update_(queries)
        return TrainOutput(prediction, enc.features, queries, compact, separate)


def fold_batchnorm(model: MNAD) -> MNAD:
    """An inference copy of ``model`` with every BatchNorm folded into the conv before it.

    In eval mode a BatchNorm is an affine map per channel, so ``conv -> BN`` equals one conv
    with scaled weights and a shifted bias: a pass over every activation less. The copy's
    outputs equal the model's to float rounding (about 1e-6 relative); it is for scoring
    only (its BatchNorms are gone, so it cannot train).
    """
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d):
                _fold_into(conv, bn)
                seq[i + 1] = nn.Identity()
    return folded


def inference_copy(model: MNAD) -> MNAD:
    """The model as scoring runs it: BatchNorm folded, eval mode, channels_last weights.

    channels_last (NHWC) lets oneDNN on CPUs and cuDNN on GPUs pick their fastest kernels for
    these small convolutions (about 1.4x in float32 and more under bf16 on a 2-core CPU,
    docs/results.md); scores equal the model's to float rounding.
    """
    return fold_batchnorm(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


@torch.no_grad()
def _fold_into(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (c_out,)
    # Output channels are dim 0 of a Conv2d weight and dim 1 of a ConvTranspose2d's.
    shape = (-1, 1, 1, 1) if isinstance(conv, nn.Conv2d) else (1, -1, 1, 1)
    conv.weight.mul_(scale.reshape(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def build_model(config: ModelConfig, seed: int | None = 0) -> MNAD:
    """A freshly initialised model; ``seed`` fixes both the weights and the memory."""
    if seed is None:
        return MNAD(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MNAD(config, generator)

"""Encoders for multi-channel cell crops, projection heads, and the models each method trains.

Every model maps a float32 batch ``(B, C, S, S)`` (normalized per channel) to an embedding
``(B, D)`` through ``model.embed(x)``; the training objective lives in ``model.loss(view1, view2)``
(contrastive methods) or ``model.loss(x, None)`` (autoencoder).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn import functional as F

from .losses import byol_loss, nt_xent, supcon


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (ResNet-18 style)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """A compact ResNet for small crops with any number of input channels.

    A stride-2 3x3 stem (followed by 2x2 max pooling when ``stem_pool``), then ``len(blocks)`` stages of basic blocks (stage ``i`` has
    ``width * 2**i`` channels and halves the resolution, except the first), then global
    average pooling. Output ``(B, out_dim)`` with ``out_dim = width * 2**(len(blocks) - 1)``.
    """

    def __init__(self, in_channels: int, *, width: int = 32, blocks: tuple[int, ...] = (1, 1, 1, 1),
                 stem_pool: bool = True):
        super().__init__()
        if in_channels < 1 or width < 1 or not blocks or min(blocks) < 1:
            raise ValueError(f"bad encoder shape: in_channels={in_channels}, width={width}, blocks={blocks}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2) if stem_pool else nn.Identity())
        layers, channels = [], width
        for i, n in enumerate(blocks):
            out = width * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(channels, out, stride=2 if (i > 0 and j == 0) else 1))
                channels = out
        self.layers = nn.Sequential(*layers)
        self.out_dim = channels
        self.stage_ends = [e - 1 for e in itertools.accumulate(blocks)]  # index of each stage's last block
        self.stages_dim = sum(width * 2 ** i for i in range(len(blocks)))

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)

    def stage_features(self, x):
        """The global average pool of every stage's output, concatenated (fine to coarse): ``(B, stages_dim)``;
        its last ``out_dim`` columns are `forward`'s output."""
        h, pooled = self.stem(x), []
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i in self.stage_ends:
                pooled.append(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
        return torch.cat(pooled, 1)


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear - BatchNorm - ReLU - Linear: the SimCLR / BYOL projection and prediction head."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def build_encoder(in_channels: int, config: dict) -> ResNetEncoder:
    return ResNetEncoder(in_channels, width=int(config["width"]), blocks=tuple(config["blocks"]),
                         stem_pool=bool(config.get("stem_pool", True)))


class SimCLR(nn.Module):
    """Encoder + projection head trained with NT-Xent (Chen et al. 2020). Embedding = encoder output.

    With ``labels`` (the cells' classes of ``config["positive_by"]``, e.g. their well), `loss` is the supervised
    contrastive loss on them (`supcon`): every cell of the class is a positive, beside the cell's other view;
    with ``groups`` (``contrast_within``, e.g. the plate) a cell is contrasted only with its own group's cells."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.encoder = build_encoder(in_channels, config)
        self.projector = mlp_head(self.encoder.out_dim, config["proj_hidden"], config["proj_dim"])
        self.temperature = float(config["temperature"])

    def embed(self, x):
        return self.encoder(x)

    def loss(self, view1, view2, labels=None, groups=None, allowed=None):
        """Loss of two views (B, C, S, S); optional class ``labels`` and ``groups`` (B,) int64 (``allowed`` is
        weak supervision's and unused here)."""
        z = self.projector(self.encoder(torch.cat([view1, view2])))
        if labels is None:
            return nt_xent(*z.chunk(2), self.temperature)
        g = None if groups is None else torch.cat([groups, groups])
        return supcon(z, torch.cat([labels, labels]), self.temperature, groups=g)


class BYOL(nn.Module):
    """Online encoder + projector + predictor regressing an EMA target network (Grill et al. 2020).

    The target (``target_encoder``, ``target_projector``) gets no gradients; call `update_target`
    after each optimizer step. Embedding = online encoder output.
    """

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.encoder = build_encoder(in_channels, config)
        self.projector = mlp_head(self.encoder.out_dim, config["proj_hidden"], config["proj_dim"])
        self.predictor = mlp_head(config["proj_dim"], config["proj_hidden"], config["proj_dim"])
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)
        self.ema = float(config["ema"])

    def embed(self, x):
        return self.encoder(x)

    def loss(self, view1, view2):
        both = torch.cat([view1, view2])
        p1, p2 = self.predictor(self.projector(self.encoder(both))).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projector(self.target_encoder(both)).chunk(2)
        return byol_loss(p1, t2) + byol_loss(p2, t1)

    @torch.no_grad()
    def update_target(self):
        """target = ema * target + (1 - ema) * online, for weights and batch-norm buffers."""
        for online, target in ((self.encoder, self.target_encoder), (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.lerp_(po.detach(), 1.0 - self.ema)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder: ``n_down`` stride-2 convs, a linear bottleneck, mirrored decoder.

    Trained with mean squared reconstruction error of the (augmented) input; embedding = bottleneck.
    The input side must be divisible by ``2**n_down``.
    """

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        width, n_down, size = int(config["width"]), int(config.get("ae_depth", 3)), int(config["input_size"])
        if size % 2 ** n_down:
            raise ValueError(f"autoencoder input size {size} is not divisible by 2**{n_down}")
        enc, ch = [], in_channels
        for i in range(n_down):
            out = width * 2 ** i
            enc += [nn.Conv2d(ch, out, 3, 2, 1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.inner = (ch, size // 2 ** n_down)
        flat = ch * self.inner[1] ** 2
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, config["latent_dim"]))
        dec = []
        for i in reversed(range(n_down)):
            out = width * 2 ** (i - 1) if i else width
            dec += [nn.ConvTranspose2d(ch, out, 4, 2, 1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.decoder_in = nn.Linear(config["latent_dim"], flat)
        self.decoder = nn.Sequential(*dec, nn.Conv2d(ch, in_channels, 3, 1, 1))

    def embed(self, x):
        return self.encoder(x)

    def reconstruct(self, x):
        h = self.decoder_in(self.encoder(x)).view(-1, self.inner[0], self.inner[1], self.inner[1])
        return self.decoder(h)

    def loss(self, view1, view2=None):
        return F.mse_loss(self.reconstruct(view1), view1)


WEAK_LOSSES = ("ce", "supcon", "ce+supcon")


def check_weak_loss(kind: str) -> str:
    """``kind`` if it is one of `WEAK_LOSSES`, else a one-line ValueError."""
    if kind not in WEAK_LOSSES:
        raise ValueError(f"unknown weak_loss {kind!r}; choose one of {', '.join(WEAK_LOSSES)}")
    return kind


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, but the gradient flowing back through it is multiplied by ``-scale``."""
    return _ReverseGradient.apply(x, float(scale))


class WeaklySupervised(nn.Module):
    """Encoder trained on treatment labels (compound and concentration, never the MOA): weak labels, as in
    Caicedo et al. 2018. ``config["weak_loss"]``: ``"ce"`` (a classification head, cross entropy of both
    augmented views, ``label_smoothing``), ``"supcon"`` (supervised contrastive, Khosla et al. 2020, on a
    projection head, ``temperature``) or ``"ce+supcon"`` (their sum). Embedding = encoder output.
    ``config["weak_classes"]`` lists the classes (the head's outputs). With groups (``config["weak_group"]``, e.g.
    the batch), `loss` contrasts a cell only with its own group's cells and its positives, and classifies it only
    among the classes present in its group. ``config["weak_adversary"]`` > 0 (with 2+ ``weak_group_classes``):
    a head learns to tell the groups apart from the embedding through a reversed gradient of that weight, so
    the encoder is pushed to forget the group (a batch-adversarial head, Ganin & Lempitsky 2015)."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        n_classes = len(config.get("weak_classes") or [])
        if n_classes < 2:
            raise ValueError("weak supervision needs at least 2 treatment classes")
        self.kind = check_weak_loss(config.get("weak_loss", "ce"))  # models saved before the option were "ce"
        self.encoder = build_encoder(in_channels, config)
        if "ce" in self.kind.split("+"):
            self.classifier = mlp_head(self.encoder.out_dim, config["proj_hidden"], n_classes)
        if "supcon" in self.kind:
            self.projector = mlp_head(self.encoder.out_dim, config["proj_hidden"], config["proj_dim"])
        self.smoothing = float(config.get("label_smoothing", 0.0))
        if self.smoothing and config.get("weak_group") and hasattr(self, "classifier"):
            raise ValueError("label_smoothing cannot be combined with weak_group (the masked classes would get mass)")
        self.temperature = float(config["temperature"])
        self.adversary_weight = float(config.get("weak_adversary") or 0.0)  # older models have no adversary
        if self.adversary_weight < 0:
            raise ValueError(f"weak_adversary must be >= 0, got {self.adversary_weight}")
        n_groups = len(config.get("weak_group_classes") or [])
        if self.adversary_weight and n_groups >= 2:
            self.adversary = mlp_head(self.encoder.out_dim, config["proj_hidden"], n_groups)

    def embed(self, x):
        return self.encoder(x)

    def loss(self, view1, view2, labels, groups=None, allowed=None):
        """Loss of two views (B, C, S, S) of cells with class ``labels`` (B,); optional ``groups`` (B,) and
        ``allowed`` (n_groups, n_classes) bool: the classes present in each group (needed for ``ce`` with groups)."""
        h, y = self.encoder(torch.cat([view1, view2])), torch.cat([labels, labels])
        g = None if groups is None else torch.cat([groups, groups])
        total = 0.0
        if "ce" in self.kind.split("+"):
            logits = self.classifier(h).float()
            if g is not None:
                if allowed is None:
                    raise ValueError("ce with groups needs allowed: the classes present in each group")
                logits = logits.masked_fill(~allowed[g], float("-inf"))
            total = total + F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        if "supcon" in self.kind:
            total = total + supcon(self.projector(h), y, self.temperature, groups=g)
        if hasattr(self, "adversary"):
            if g is None:
                raise ValueError("the batch adversary (weak_adversary) needs the groups of the cells")
            total = total + F.cross_entropy(self.adversary(reverse_gradient(h, self.adversary_weight)).float(), g)
        return total


class RandomEncoder(nn.Module):
    """The control: the SimCLR encoder at its seeded random initialisation, never trained."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.encoder = build_encoder(in_channels, config)

    def embed(self, x):
        return self.encoder(x)


def _mae(in_channels: int, config: dict) -> nn.Module:
    from .mae import MaskedAutoencoder  # needs transformers (the hf extra)

    return MaskedAutoencoder(in_channels, config)


MODELS = {"simclr": SimCLR, "byol": BYOL, "autoencoder": ConvAutoencoder, "random": RandomEncoder, "mae": _mae,
          "weak": WeaklySupervised}


def build_model(method: str, in_channels: int, config: dict) -> nn.Module:
    """Build the model of ``method`` ('simclr', 'byol', 'autoencoder', 'mae', 'weak' or 'random') for ``in_channels``."""
    if method not in MODELS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(MODELS)} or 'pixel_pca'")
    return MODELS[method](in_channels, config)

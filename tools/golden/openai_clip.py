#!/usr/bin/env python3
"""Golden fixture for src/nets/openai-clip.ts (test/openai-clip.test.ts).

Builds a tiny CLIP ViT with seeded random weights, writes its state dict (official parameter names and layouts)
as safetensors, some inputs, and the reference outputs computed in float64, into test/fixtures/openai-clip/.

The reference is this file's own PyTorch implementation of the architecture of openai/CLIP's model.py (no code
of that repository is part of this project). With --clip-repo PATH the model classes are instead imported from
YOUR checkout of https://github.com/openai/CLIP (only clip/model.py is loaded, so its other dependencies are not
needed) and run in float32 (its LayerNorm computes in float32 whatever the model's dtype); both get the same
weights (filled by parameter name), and their outputs agree to float32 rounding.

Preprocessing follows CLIP's transform (clip.py: Resize(n_px, BICUBIC), CenterCrop(n_px), ToTensor, Normalize)
on float pixels: torchvision's shorter-side resize and centre crop, PIL's bicubic resampling (mode "F", one pass
per axis, horizontal first, each clipped to [0, 1] as PIL's 8-bit passes clip to [0, 255]); no 8-bit rounding.

    /usr/bin/python3 tools/golden/openai_clip.py [--out DIR] [--clip-repo PATH] [--counts]

--counts prints the parameter counts of the released ViT configurations (modules on the meta device: nothing is
allocated) and exits.
"""

import argparse
import importlib.util
import json
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from torch import nn

TINY = dict(
    embed_dim=24,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_heads=4,
    vision_patch_size=8,
    context_length=77,
    # CLIP's byte-level vocabulary with no merges: 256 bytes, 256 bytes + "</w>", <|startoftext|>, <|endoftext|>.
    vocab_size=514,
    text_width=32,
    text_heads=2,
    text_layers=2,
)

# The released ViT models (heads = width / 64, as build_model assumes).
RELEASED = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                     vision_patch_size=32, context_length=77, vocab_size=49408, text_width=512, text_heads=8,
                     text_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                     vision_patch_size=16, context_length=77, vocab_size=49408, text_width=512, text_heads=8,
                     text_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_heads=16,
                     vision_patch_size=14, context_length=77, vocab_size=49408, text_width=768, text_heads=12,
                     text_layers=12),
}

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])

# ----------------------------------------------------------------------------------------- own reference model


class QuickGelu(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-norm residual block on sequence-first [T, B, W] activations (nn.MultiheadAttention's default layout)."""

    def __init__(self, width, heads, device):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, device=device)
        self.ln_1 = nn.LayerNorm(width, device=device)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width, device=device)),
            ("gelu", QuickGelu()),
            ("c_proj", nn.Linear(4 * width, width, device=device)),
        ]))
        self.ln_2 = nn.LayerNorm(width, device=device)

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Tower(nn.Module):
    def __init__(self, width, layers, heads, device):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads, device) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class Vision(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        w, p = c["vision_width"], c["vision_patch_size"]
        grid = c["image_resolution"] // p
        self.conv1 = nn.Conv2d(3, w, p, stride=p, bias=False, device=device)
        self.class_embedding = nn.Parameter(torch.empty(w, device=device))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, w, device=device))
        self.ln_pre = nn.LayerNorm(w, device=device)
        self.transformer = Tower(w, c["vision_layers"], c["vision_heads"], device)
        self.ln_post = nn.LayerNorm(w, device=device)
        self.proj = nn.Parameter(torch.empty(w, c["embed_dim"], device=device))

    def forward(self, pixels):
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # [B, grid², W], patches row-major
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        x = self.transformer(x.transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class OwnClip(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.visual = Vision(c, device)
        self.transformer = Tower(c["text_width"], c["text_layers"], c["text_heads"], device)
        self.token_embedding = nn.Embedding(c["vocab_size"], c["text_width"], device=device)
        self.positional_embedding = nn.Parameter(torch.empty(c["context_length"], c["text_width"], device=device))
        self.ln_final = nn.LayerNorm(c["text_width"], device=device)
        self.text_projection = nn.Parameter(torch.empty(c["text_width"], c["embed_dim"], device=device))
        self.logit_scale = nn.Parameter(torch.empty([], device=device))

    def encode_image(self, pixels):
        return self.visual(pixels)

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        n = tokens.shape[1]
        causal = torch.full((n, n), float("-inf"), dtype=x.dtype).triu(1)
        x = self.ln_final(self.transformer(x.transpose(0, 1), causal).transpose(0, 1))
        # The end token has the largest id, so argmax finds it in every row.
        return x[torch.arange(tokens.shape[0]), tokens.argmax(-1)] @ self.text_projection

    def forward(self, pixels, tokens):
        zi = self.encode_image(pixels)
        zt = self.encode_text(tokens)
        zi = zi / zi.norm(dim=-1, keepdim=True)
        zt = zt / zt.norm(dim=-1, keepdim=True)
        per_image = self.logit_scale.exp() * zi @ zt.t()
        return per_image, per_image.t()


def official_clip(repo, c):
    """The user's openai/CLIP checkout: clip/model.py alone, so clip/__init__'s imports are not needed."""
    path = os.path.join(repo, "clip", "model.py")
    spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.CLIP(c["embed_dim"], c["image_resolution"], c["vision_layers"], c["vision_width"],
                     c["vision_patch_size"], c["context_length"], c["vocab_size"], c["text_width"],
                     c["text_heads"], c["text_layers"])
    # CLIP fixes the vision heads at width / 64; the tiny model has more heads to exercise the head split.
    model.visual = mod.VisionTransformer(c["image_resolution"], c["vision_patch_size"], c["vision_width"],
                                         c["vision_layers"], c["vision_heads"], c["embed_dim"])
    return model


def param_count(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------- weights and inputs


def fill(model, seed):
    """Seeded weights by parameter name (so both implementations get the same values), at scales that keep every
    part of the network influential: LayerNorm gains near 1, non-zero biases, matrices ~ N(0, 1/fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            leaf = name.rsplit(".", 1)[-1]
            if name == "logit_scale":
                v = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
            elif ".ln_" in f".{name}" and leaf == "weight":
                v = 1 + 0.1 * r
            elif p.dim() == 1:
                v = (0.5 if leaf == "class_embedding" else 0.1) * r
            elif leaf == "positional_embedding":
                v = 0.1 * r
            elif name == "token_embedding.weight":
                v = 0.5 * r
            elif leaf in ("proj", "text_projection"):  # [in, out]: used as x @ proj
                v = r / math.sqrt(p.shape[0])
            else:  # [out, in, ...]
                v = r / math.sqrt(p[0].numel())
            p.copy_(v.to(p.dtype))


BYTE_ORDER = [*range(33, 127), *range(161, 173), *range(174, 256)]
BYTE_ORDER += [b for b in range(256) if b not in BYTE_ORDER]
BYTE_ID = {b: i for i, b in enumerate(BYTE_ORDER)}


def tokenize_no_merges(text, ctx=77):
    """CLIP's tokenizer with an empty merge list, for ASCII prompts: each word's bytes, its last byte as the
    "</w>" symbol (id + 256); [SOT] + ids[:ctx-2] + [EOT], zero padded (clip.tokenize with truncate=True)."""
    import re

    ids = []
    for piece in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", " ".join(text.split()).lower()):
        b = piece.encode("ascii")
        ids += [BYTE_ID[x] for x in b[:-1]] + [BYTE_ID[b[-1]] + 256]
    row = [512] + ids[: ctx - 2] + [513]
    return row + [0] * (ctx - len(row))


def pil_pass(chan, size):
    out = Image.fromarray(chan.astype(np.float32), mode="F").resize(size, Image.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def clip_pixels(x, n):
    """CLIP's preprocessing of one HWC image in [-1, 1] (our convention) up to Normalize: [n, n, 3] in [0, 1]."""
    img = np.clip((x.astype(np.float64) + 1) / 2, 0, 1).astype(np.float32)
    h, w = img.shape[:2]
    if min(h, w) != n:  # torchvision Resize(int): shorter side to n, longer int(n * long / short)
        nh, nw = (n, int(n * w / h)) if h <= w else (int(n * h / w), n)
        chans = []
        for c in range(3):
            ch = img[:, :, c]
            if nw != w:
                ch = pil_pass(ch, (nw, h))  # PIL: horizontal pass first
            if nh != h:
                ch = pil_pass(ch, (nw, nh))
            chans.append(ch)
        img = np.stack(chans, -1)
        h, w = nh, nw
    top, left = int(round((h - n) / 2.0)), int(round((w - n) / 2.0))  # CenterCrop (Python's round: half to even)
    return img[top: top + n, left: left + n]


def normalize(pixels, dtype):
    """[B, n, n, 3] in [0, 1] → CLIP-normalized NCHW."""
    return torch.from_numpy(((pixels - MEAN) / STD).transpose(0, 3, 1, 2).copy()).to(dtype)


# ----------------------------------------------------------------------------------------- file writers


def write_safetensors(path, tensors, metadata):
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name, arr in tensors.items():
        arr = np.array(arr, order="C")  # (np.ascontiguousarray would turn 0-d logit_scale into shape [1])
        dtype = {np.float32: "F32", np.int64: "I64"}[arr.dtype.type]
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures",
                                                  "openai-clip"))
    ap.add_argument("--clip-repo", help="path of a checkout of github.com/openai/CLIP to use as the reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counts", action="store_true", help="print parameter counts of the released ViTs and exit")
    args = ap.parse_args()

    if args.counts:
        for name, c in RELEASED.items():
            n = param_count(OwnClip(c, device="meta"))
            print(f"{name}: {n:,} parameters (incl. logit_scale)")
        return

    c = TINY
    model = official_clip(args.clip_repo, c) if args.clip_repo else OwnClip(c)
    fill(model, args.seed)
    # float64 reference; the official LayerNorm computes in float32 (it casts its input), so that model stays float32.
    dtype = torch.float32 if args.clip_repo else torch.float64
    model = model.to(dtype).eval()
    os.makedirs(args.out, exist_ok=True)

    sd = OrderedDict((k, v.detach().float().numpy()) for k, v in model.state_dict().items())
    # The released JIT archives carry these three scalars in their state dict; build_model drops them.
    sd["input_resolution"] = np.array(c["image_resolution"], dtype=np.int64)
    sd["context_length"] = np.array(c["context_length"], dtype=np.int64)
    sd["vocab_size"] = np.array(c["vocab_size"], dtype=np.int64)
    write_safetensors(os.path.join(args.out, "weights.safetensors"), sd, {"generator": "tools/golden/openai_clip.py"})

    rng = np.random.default_rng(args.seed)
    n = c["image_resolution"]
    images = {
        "images": rng.uniform(-1, 1, (2, n, n, 3)),  # at the model's resolution: no resize
        "small": rng.uniform(-1, 1, (2, 20, 20, 3)),  # bicubic upsampling
        "wide": rng.uniform(-1, 1, (1, 24, 40, 3)),  # 24x40 → 32x53, crop left round(10.5) = 10
        "tall": rng.uniform(-1, 1, (1, 56, 48, 3)),  # 56x48 → 37x32 (antialiased), crop top round(2.5) = 2
    }
    prompts = [
        "a red circle",
        "Two blue squares, above 1 green triangle!",
        "a small yellow square in the top left and a large blue circle in the bottom right of the picture, "
        "next to nothing else",
    ]
    tokens = np.array([tokenize_no_merges(p, c["context_length"]) for p in prompts], dtype=np.int32)

    def save(name, arr, dtype=np.float32):
        np.save(os.path.join(args.out, f"{name}.npy"), np.ascontiguousarray(arr, dtype=dtype))

    with torch.no_grad():
        for key, x in images.items():
            x = x.astype(np.float32)
            pixels = np.stack([clip_pixels(img, n) for img in x])
            save(key, x)
            if key != "images":
                save(f"{key}_pixels", pixels)
            save(f"{key}_features", model.encode_image(normalize(pixels, dtype)).numpy())
        save("tokens", tokens, np.int32)
        save("text_features", model.encode_text(torch.from_numpy(tokens).long()).numpy())
        pixels = np.stack([clip_pixels(img, n) for img in images["images"].astype(np.float32)])
        per_image, _ = model(normalize(pixels, dtype), torch.from_numpy(tokens).long())
        save("logits_per_image", per_image.numpy())

    manifest = {
        "generator": "tools/golden/openai_clip.py",
        "reference": "openai/CLIP clip/model.py (user checkout)" if args.clip_repo else "own implementation",
        "torch": torch.__version__,
        "seed": args.seed,
        "config": c,
        "prompts": prompts,
        "params": param_count(model),
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out}: {len(os.listdir(args.out))} files, {total / 1024:.0f} KiB, {manifest['params']:,} params")


if __name__ == "__main__":
    sys.exit(main())

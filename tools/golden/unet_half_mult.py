#!/usr/bin/env python3
"""Fixture for the UNet's first and last widths when channel_mult[0] != 1 (test/unet-half-mult.test.ts).

guided-diffusion's 512x512 models use channel_mult (0.5, 1, 1, 2, 2, 4, 4): their input conv and output head are
int(channel_mult[0] * model_channels) wide, not model_channels. This builds a tiny UNetModel and a tiny
EncoderUNetModel with channel_mult (0.5, 1) from YOUR checkout of https://github.com/openai/guided-diffusion
(imported by path; none of its code is part of this project), fills them with seeded random weights, and writes
into test/fixtures/unet-half-mult/:

    unet.safetensors.gz, classifier.safetensors.gz   state dicts, official names and layouts, float16 values
    x.npy (float32, NCHW), t.npy (float32)           the inputs
    unet_out.npy, classifier_logits.npy              the official forwards, computed in float64
    manifest.json                                    configurations (as our flag readers take them), seeds, counts,
                                                     and the official code's own float32-vs-float64 spread

model_channels must be 64: the first level is 0.5·64 = 32 channels and GroupNorm32 needs a multiple of 32. That
makes ~1.2M parameters, far too many to commit as random float16 (2.4 MB). So every weight matrix (ndim >= 2) is
a seeded random pool of POOL_LEN values, tiled from a random offset and scaled by 1/sqrt(fan_in): gzip stores each
tensor's first period and back-references for the rest. POOL_LEN is prime so that no row, column or kernel of a
tensor lines up with the period. Biases and norm gains are plain seeded random values, as in make_golden.py.

    /usr/bin/python3 tools/golden/unet_half_mult.py --guided-diffusion /path/to/guided-diffusion [--out DIR] [--counts]

--counts prints the parameter counts of the released 512x512 diffusion model and classifier (their flags from
guided-diffusion's README; the random init is skipped, so only the shapes cost memory) and exits.
"""

import argparse
import contextlib
import gzip
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import write_safetensors  # noqa: E402

POOL_LEN = 251
SEEDS = {"unet": 11, "classifier": 12, "inputs": 13}
TIMESTEPS = [3.0, 917.0]

# Our flag readers' keys (src/nets/configs.ts gdUnetConfigFromOfficial). guided-diffusion's own create_model parses
# channel_mult with int(), so "0.5,1" reaches UNetModel only through the image-size defaults (512); the tiny model
# is built by calling UNetModel directly with the same values.
UNET_FLAGS = {
    "image_size": 8,
    "num_channels": 64,
    "num_res_blocks": 1,
    "channel_mult": "0.5,1",
    "num_heads": 1,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "attention_resolutions": "4",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_new_attention_order": False,
    "learn_sigma": True,
    "class_cond": False,
}
# The classifier's fields in our EncoderUNetConfig's terms (create_classifier fixes channel_mult by image size).
CLASSIFIER = {
    "imageSize": 8,
    "inChannels": 3,
    "modelChannels": 64,
    "outChannels": 10,
    "numResBlocks": 1,
    "attentionResolutions": [4],
    "channelMult": [0.5, 1],
    "numHeads": 1,
    "numHeadChannels": 32,
    "useScaleShiftNorm": True,
    "resblockUpdown": True,
    "useNewAttentionOrder": False,
    "pool": "attention",
}


# guided-diffusion's README: the 512x512 class-conditional model and the 512x512 classifier.
RELEASED_512_MODEL = {
    "attention_resolutions": "32,16,8",
    "class_cond": True,
    "image_size": 512,
    "learn_sigma": True,
    "num_channels": 256,
    "num_head_channels": 64,
    "num_res_blocks": 2,
    "resblock_updown": True,
    "use_fp16": False,
    "use_scale_shift_norm": True,
}
RELEASED_512_CLASSIFIER = {
    "image_size": 512,
    "classifier_attention_resolutions": "32,16,8",
    "classifier_depth": 2,
    "classifier_width": 128,
    "classifier_pool": "attention",
    "classifier_resblock_updown": True,
    "classifier_use_scale_shift_norm": True,
    "classifier_use_fp16": False,
}


def released_512_counts(th):
    import inspect

    import torch.nn as nn
    from guided_diffusion import script_util as su

    for cls in (nn.Conv1d, nn.Conv2d, nn.Linear, nn.GroupNorm, nn.Embedding):
        cls.reset_parameters = lambda self: None
    flags = {**su.model_and_diffusion_defaults(), **RELEASED_512_MODEL}
    keys = inspect.signature(su.create_model).parameters
    model = su.create_model(**{k: v for k, v in flags.items() if k in keys})
    counts = {"model_512": sum(p.numel() for p in model.parameters())}
    del model
    classifier = su.create_classifier(**{**su.classifier_defaults(), **RELEASED_512_CLASSIFIER})
    counts["classifier_512"] = sum(p.numel() for p in classifier.parameters())
    return counts


def attention_ds(image_size, resolutions):
    return tuple(image_size // r for r in resolutions)


def build(th):
    from guided_diffusion.unet import EncoderUNetModel, UNetModel

    f = UNET_FLAGS
    mult = tuple(float(m) for m in f["channel_mult"].split(","))
    unet = UNetModel(
        image_size=f["image_size"],
        in_channels=3,
        model_channels=f["num_channels"],
        out_channels=6 if f["learn_sigma"] else 3,
        num_res_blocks=f["num_res_blocks"],
        attention_resolutions=attention_ds(f["image_size"], [int(r) for r in f["attention_resolutions"].split(",")]),
        dropout=0.0,
        channel_mult=mult,
        num_classes=None,
        use_checkpoint=False,
        use_fp16=False,
        num_heads=f["num_heads"],
        num_head_channels=f["num_head_channels"],
        num_heads_upsample=f["num_heads_upsample"],
        use_scale_shift_norm=f["use_scale_shift_norm"],
        resblock_updown=f["resblock_updown"],
        use_new_attention_order=f["use_new_attention_order"],
    )
    c = CLASSIFIER
    classifier = EncoderUNetModel(
        image_size=c["imageSize"],
        in_channels=c["inChannels"],
        model_channels=c["modelChannels"],
        out_channels=c["outChannels"],
        num_res_blocks=c["numResBlocks"],
        attention_resolutions=attention_ds(c["imageSize"], c["attentionResolutions"]),
        channel_mult=tuple(c["channelMult"]),
        use_fp16=False,
        num_heads=c["numHeads"],
        num_head_channels=c["numHeadChannels"],
        use_scale_shift_norm=c["useScaleShiftNorm"],
        resblock_updown=c["resblockUpdown"],
        use_new_attention_order=c["useNewAttentionOrder"],
        pool=c["pool"],
    )
    # The widths this fixture exists for: int(0.5 * 64) at both ends.
    assert tuple(unet.input_blocks[0][0].weight.shape) == (32, 3, 3, 3)
    assert tuple(unet.out[2].weight.shape) == (6, 32, 3, 3) and tuple(unet.out[0].weight.shape) == (32,)
    assert tuple(classifier.input_blocks[0][0].weight.shape) == (32, 3, 3, 3)
    return unet.eval(), classifier.eval()


def fill(th, model, seed):
    """Seeded weights, float16-representable: tiled pools for matrices and kernels, plain random otherwise."""
    import torch.nn as nn

    gen = th.Generator().manual_seed(seed)
    pool = th.randn(POOL_LEN, generator=gen, dtype=th.float32)
    gains = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    with th.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                off = int(th.randint(POOL_LEN, (1,), generator=gen))
                idx = (off + th.arange(p.numel())) % POOL_LEN
                v = pool[idx].reshape(p.shape) / math.sqrt(float(np.prod(p.shape[1:])))
            else:
                r = th.randn(p.shape, generator=gen, dtype=th.float32)
                v = 1.0 + 0.1 * r if name in gains else 0.1 * r
            p.copy_(v.half().float())


@contextlib.contextmanager
def float64_everywhere(th, models):
    """The official forward casts to float32 in three places whatever the weights' dtype: the input (self.dtype),
    the sinusoidal timestep embedding (float32 frequencies) and x.float() before GroupNorm32 and each attention
    softmax. For a float64 reference those follow the input's dtype here (same formulas as guided_diffusion/nn.py);
    everything else runs as the official code is. A float32 tensor left anywhere would raise in the next conv or
    linear (mixed dtypes)."""
    import guided_diffusion.unet as gd_unet

    def timestep_embedding(timesteps, dim, max_period=10000):
        half = dim // 2
        freqs = th.exp(-math.log(max_period) * th.arange(half, dtype=th.float64) / half)
        args = timesteps[:, None].double() * freqs[None]
        emb = th.cat([th.cos(args), th.sin(args)], dim=-1)
        return th.cat([emb, th.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb

    saved = (gd_unet.timestep_embedding, th.Tensor.float, [m.dtype for m in models])
    gd_unet.timestep_embedding = timestep_embedding
    th.Tensor.float = lambda self, *a, **k: self
    for m in models:
        m.double()
        m.dtype = th.float64
    try:
        yield
    finally:
        gd_unet.timestep_embedding, th.Tensor.float = saved[0], saved[1]
        for m, dt in zip(models, saved[2]):
            m.float()
            m.dtype = dt


def rel_err(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def write_weights(model, out, name, config):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.safetensors")
        n = write_safetensors(path, list(model.state_dict().items()), config)
        # mtime=0: the same weights give the same bytes.
        target = os.path.join(out, f"{name}.safetensors.gz")
        with open(path, "rb") as src, gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as dst:
            shutil.copyfileobj(src, dst)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guided-diffusion", required=True, help="checkout of openai/guided-diffusion")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "test", "fixtures", "unet-half-mult"))
    ap.add_argument("--counts", action="store_true", help="print the released 512x512 models' counts and exit")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.guided_diffusion))
    import torch as th

    if args.counts:
        print(json.dumps(released_512_counts(th)))
        return

    th.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    unet, classifier = build(th)
    fill(th, unet, SEEDS["unet"])
    fill(th, classifier, SEEDS["classifier"])
    gen = th.Generator().manual_seed(SEEDS["inputs"])
    x = th.randn(len(TIMESTEPS), 3, 8, 8, generator=gen, dtype=th.float32)
    t = th.tensor(TIMESTEPS, dtype=th.float32)

    with th.no_grad():
        out32 = unet(x, t).numpy()
        logits32 = classifier(x, t).numpy()
        with float64_everywhere(th, [unet, classifier]):
            out64 = unet(x.double(), t.double()).numpy()
            logits64 = classifier(x.double(), t.double()).numpy()
        assert out64.dtype == np.float64 and logits64.dtype == np.float64
        # The float32 weights are unchanged by the round trip (they are float16 values).
        assert np.array_equal(unet(x, t).numpy(), out32)

    params = {
        "unet": write_weights(unet, args.out, "unet", UNET_FLAGS),
        "classifier": write_weights(classifier, args.out, "classifier", CLASSIFIER),
    }
    np.save(os.path.join(args.out, "x.npy"), x.numpy())
    np.save(os.path.join(args.out, "t.npy"), t.numpy())
    np.save(os.path.join(args.out, "unet_out.npy"), out64)
    np.save(os.path.join(args.out, "classifier_logits.npy"), logits64)
    manifest = {
        "generator": "tools/golden/unet_half_mult.py",
        "reference": "openai/guided-diffusion guided_diffusion/unet.py (UNetModel, EncoderUNetModel)",
        "torch": th.__version__,
        "seeds": SEEDS,
        "pool_len": POOL_LEN,
        "timesteps": TIMESTEPS,
        "unet_flags": UNET_FLAGS,
        "classifier": CLASSIFIER,
        "params": params,
        "official_f32_vs_f64_rel_err": {"unet": rel_err(out32, out64), "classifier": rel_err(logits32, logits64)},
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps({"params": params, "spread": manifest["official_f32_vs_f64_rel_err"]}))


if __name__ == "__main__":
    main()

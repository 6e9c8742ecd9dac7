#!/usr/bin/env python3
"""Writes a golden directory (manifest.json + <section>/*.npy + weights/*.safetensors) in the format of the shared
one (see its README.md), from the OFFICIAL PyTorch code of openai/glide-text2im and openai/guided-diffusion, which
this script imports from checkouts passed by path (nothing of the official code is part of this project).

Its sizes, seeds and prompts deliberately differ from the shared golden set's, so that running
`guidance-lab verify-reference OUT` on its output checks that the verifier and the port depend on nothing but the
manifest.

    python3 tools/golden/make_golden.py --glide /tmp/glide-text2im --guided-diffusion /tmp/guided-diffusion \
        --out /work/golden2 [--sections glide_fwd glide_cfg ...]

Needs torch and numpy; the GPT-2/CLIP tokenizers of glide-text2im also need the `regex` package (put it on
PYTHONPATH); `ftfy` is stubbed as the identity when missing (as the shared set did).
"""
import argparse
import json
import math
import os
import platform
import struct
import sys
import tempfile
import time
import types

import numpy as np

ALL_SECTIONS = [
    "schedules",
    "unit",
    "glide_fwd",
    "glide_cfg",
    "glide_ddim",
    "gd_unet",
    "gd_classifier",
    "gd_guided",
    "clip",
    "clip_guided",
]

SEEDS = {"build": 7, "weights": 4321, "inputs": 2024}
PROMPTS = [
    "a watercolor of a lighthouse at dusk",
    "two green apples on a wooden table",
    "a pencil sketch of a cat wearing a tiny hat",
]
GUIDANCE_SCALE = 4.0
CLIP_GUIDANCE_SCALE = 2.0
CLASSIFIER_SCALE = 2.5

SMALL_GLIDE = {
    "image_size": 32,
    "num_channels": 64,
    "num_res_blocks": 1,
    "channel_mult": "1,2,4",
    "num_heads": 1,
    "num_head_channels": 16,
    "num_heads_upsample": -1,
    "attention_resolutions": "16,8",
    "dropout": 0.1,
    "text_ctx": 64,
    "xf_width": 96,
    "xf_layers": 3,
    "xf_heads": 3,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
    "timestep_respacing": "15",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "cache_text_emb": False,
    "inpaint": False,
    "super_res": False,
}
GLIDE_DDIM = {"respacing": "ddim8", "eta": 0.0, "temp": 0.997}
SMALL_CLIP = {
    "logit_scale": 100.0,
    "beta_schedule": "squaredcos_cap_v2",
    "n_timesteps": 1000,
    "image_size": 32,
    "patch_size": 8,
    "n_vocab": 49408,
    "max_text_len": 40,
    "n_embd": 48,
    "n_head_state_text": 32,
    "n_head_text": 3,
    "n_xf_blocks_text": 3,
    "n_head_state_image": 16,
    "n_head_image": 4,
    "n_xf_blocks_image": 1,
}
SMALL_GD_CLASSIFIER = {
    "image_size": 64,
    "classifier_use_fp16": False,
    "classifier_width": 64,
    "classifier_depth": 2,
    "classifier_attention_resolutions": "16,8",
    "classifier_use_scale_shift_norm": True,
    "classifier_resblock_updown": True,
    "classifier_pool": "attention",
}
SMALL_GD_MODEL = {
    "image_size": 64,
    "num_channels": 64,
    "num_res_blocks": 2,
    "num_heads": 2,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "1,2,2,4",
    "dropout": 0.0,
    "class_cond": True,
    "use_checkpoint": False,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "use_new_attention_order": False,
    "learn_sigma": True,
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "timestep_respacing": "12",
    "use_kl": False,
    "predict_xstart": False,
    "rescale_timesteps": False,
    "rescale_learned_sigmas": False,
}
RESPACING_SPECS = {1000: ["15", "12", "30", "ddim8", "ddim20", "fast27", "5,5,5", "7,3,2"], 500: ["15", "ddim10", "4,4"]}
TABLES = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
]
REINIT_RULE = (
    "Deterministically overwrite EVERY parameter (the repos leave some params as th.empty and zero-init output "
    "convs).\n  ndim>=2 : N(0, 1/sqrt(prod(shape[1:])))   (fan-in scaling)\n  norm gains (GroupNorm/LayerNorm "
    ".weight, CLIP LayerNorm .g): 1 + 0.1*N(0,1)\n  other 1-D (biases, pred_state ...): 0.1*N(0,1)\nParameters are "
    "visited in named_parameters() order with one th.Generator per model (seed weights + model index), then rounded "
    "through float16."
)


def setup_paths(glide, gd):
    # glide-text2im's CLIP attention uses np.bool, removed in NumPy 1.24.
    if not hasattr(np, "bool") or np.bool is not bool:
        try:
            np.bool
        except AttributeError:
            np.bool = bool
    for p in (glide, gd):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    if "ftfy" not in sys.modules:
        try:
            import ftfy  # noqa: F401
        except ImportError:
            stub = types.ModuleType("ftfy")
            stub.fix_text = lambda s: s
            sys.modules["ftfy"] = stub


class Writer:
    def __init__(self, out):
        self.out = out
        self.arrays = {}

    def save(self, key, arr):
        arr = np.ascontiguousarray(arr)
        path = os.path.join(self.out, key + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, arr)
        a = arr.astype(np.float64)
        self.arrays[key] = {
            "file": key + ".npy",
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "mean": float(a.mean()) if a.size else 0.0,
            "std": float(a.std()) if a.size else 0.0,
            "abs_max": float(np.abs(a).max()) if a.size else 0.0,
            "abs_sum": float(np.abs(a).sum()),
        }


def f32(t):
    return t.detach().cpu().float().numpy().astype(np.float32)


def i64(t):
    return np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t).astype(np.int64)


# ------------------------------------------------------------------------------------------------ weights


def reinit(th, model_or_modules, seed):
    """Overwrites every parameter (see REINIT_RULE) and rounds it through float16."""
    import torch.nn as nn

    gen = th.Generator().manual_seed(seed)
    modules = model_or_modules if isinstance(model_or_modules, list) else [("", model_or_modules)]
    for prefix, m in modules:
        gains = set()
        for name, mod in m.named_modules():
            if isinstance(mod, (nn.GroupNorm, nn.LayerNorm)):
                gains.add(f"{name}.weight" if name else "weight")
            elif type(mod).__name__ == "LayerNorm" and hasattr(mod, "g"):
                gains.add(f"{name}.g" if name else "g")
        with th.no_grad():
            for name, p in m.named_parameters():
                r = th.randn(p.shape, generator=gen, dtype=th.float32)
                if p.ndim >= 2:
                    v = r / math.sqrt(float(np.prod(p.shape[1:])))
                elif name in gains:
                    v = 1.0 + 0.1 * r
                else:
                    v = 0.1 * r
                p.copy_(v.half().float())


def write_safetensors(path, f16_tensors, config, f32_tensors=()):
    """(name, torch tensor) lists; F16 ones must be F16-representable, F32 ones are stored as they are."""
    header = {"__metadata__": {"config": json.dumps(config)}}
    blobs, entries, off = [], [], 0
    for name, t, dt in [(n, t, "F16") for n, t in f16_tensors] + [(n, t, "F32") for n, t in f32_tensors]:
        a = t.detach().cpu().float().numpy()
        if dt == "F16":
            h = a.astype("<f2")
            if not np.array_equal(h.astype(np.float32), a):
                raise ValueError(f"{name}: not float16-representable")
        else:
            h = a.astype("<f4")
        b = h.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        entries.append((name, list(a.shape), off, len(b), "float16" if dt == "F16" else "float32"))
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    base = 8 + len(hj)
    index = {
        "format": "safetensors (F16 or F32, little endian); abs_offset = file offset of first byte",
        "header_bytes": base,
        "tensors": [
            {"name": n, "shape": s, "dtype": d, "abs_offset": base + o, "nbytes": nb} for n, s, o, nb, d in entries
        ],
        "n_params": int(sum(int(np.prod(s)) for _, s, _, _, _ in entries)),
    }
    with open(path.replace(".safetensors", ".index.json"), "w") as f:
        json.dump(index, f)
    return index["n_params"]



# ------------------------------------------------------------------------------------------------ builders


class Ctx:
    def __init__(self, args):
        import torch as th

        self.th = th
        self.args = args
        self.w = Writer(args.out)
        self.meta_params = {}
        self.timings = {}
        self._glide = None
        self._clip = None
        self._gd = None
        self._classifier = None

    def gen(self, offset):
        return self.th.Generator().manual_seed(SEEDS["inputs"] * 1000 + offset)

    def randn(self, shape, offset):
        return self.th.randn(*shape, generator=self.gen(offset))

    # GLIDE base model + its diffusion
    def glide(self):
        if self._glide is None:
            from glide_text2im.model_creation import create_model_and_diffusion

            self.th.manual_seed(SEEDS["build"])
            model, diffusion = create_model_and_diffusion(**SMALL_GLIDE)
            model.eval()
            reinit(self.th, model, SEEDS["weights"] + 0)
            sd = model.state_dict()
            n = write_safetensors(
                os.path.join(self.args.out, "weights", "glide_small.safetensors"), list(sd.items()), SMALL_GLIDE
            )
            self.meta_params["glide_small"] = n
            self._glide = (model, diffusion)
        return self._glide

    def glide_tokens(self, prompts):
        model, _ = self.glide()
        toks, masks = [], []
        for p in prompts:
            t = model.tokenizer.encode(p)
            t, m = model.tokenizer.padded_tokens_and_mask(t, SMALL_GLIDE["text_ctx"])
            toks.append(t)
            masks.append(m)
        return self.th.tensor(toks, dtype=self.th.long), self.th.tensor(masks, dtype=self.th.bool)

    def clip(self):
        if self._clip is None:
            import yaml
            from glide_text2im.clip.model_creation import create_clip_model

            self.th.manual_seed(SEEDS["build"])
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                yaml.safe_dump(SMALL_CLIP, f)
                cfg_path = f.name
            clip = create_clip_model(config_path=cfg_path, device=self.th.device("cpu"))
            os.unlink(cfg_path)
            clip.text_encoder.eval()
            clip.image_encoder.eval()
            reinit(self.th, [("text_encoder", clip.text_encoder), ("image_encoder", clip.image_encoder)],
                   SEEDS["weights"] + 1)
            tensors = [("text_encoder." + k, v) for k, v in clip.text_encoder.state_dict().items()]
            tensors += [("image_encoder." + k, v) for k, v in clip.image_encoder.state_dict().items()]
            # logit_scale = log(100) is not F16-representable: stored as F32 [1], as the shared set does.
            n = write_safetensors(
                os.path.join(self.args.out, "weights", "clip_small.safetensors"),
                tensors,
                SMALL_CLIP,
                [("logit_scale", clip.logit_scale.reshape(1))],
            )
            self.meta_params["clip_small"] = n
            self._clip = clip
        return self._clip

    def gd(self):
        if self._gd is None:
            from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

            opts = model_and_diffusion_defaults()
            opts.update({k: v for k, v in SMALL_GD_MODEL.items() if k in opts})
            unknown = [k for k in SMALL_GD_MODEL if k not in opts]
            assert not unknown, unknown
            self.th.manual_seed(SEEDS["build"])
            model, diffusion = create_model_and_diffusion(**opts)
            model.eval()
            reinit(self.th, model, SEEDS["weights"] + 2)
            n = write_safetensors(
                os.path.join(self.args.out, "weights", "gd_unet_small.safetensors"),
                list(model.state_dict().items()),
                SMALL_GD_MODEL,
            )
            self.meta_params["gd_unet_small"] = n
            self._gd = (model, diffusion)
        return self._gd

    def classifier(self):
        if self._classifier is None:
            from guided_diffusion.script_util import classifier_defaults, create_classifier

            opts = classifier_defaults()
            opts.update(SMALL_GD_CLASSIFIER)
            self.th.manual_seed(SEEDS["build"])
            c = create_classifier(**opts)
            c.eval()
            reinit(self.th, c, SEEDS["weights"] + 3)
            n = write_safetensors(
                os.path.join(self.args.out, "weights", "gd_classifier_small.safetensors"),
                list(c.state_dict().items()),
                SMALL_GD_CLASSIFIER,
            )
            self.meta_params["gd_classifier_small"] = n
            self._classifier = c
        return self._classifier


def save_tables(w, key, diffusion):
    w.save(f"{key}/timestep_map", np.asarray(diffusion.timestep_map, dtype=np.int64))
    for name in TABLES:
        w.save(f"{key}/{name}", np.asarray(getattr(diffusion, name), dtype=np.float64))


class StepRecorder:
    """Records, per p_sample call, the noise drawn by th.randn_like and the p_mean_variance outputs."""

    def __init__(self, th, diffusion):
        self.th = th
        self.diffusion = diffusion
        self.noise, self.mean, self.logvar = [], [], []

    def __enter__(self):
        th = self.th
        self._randn_like = th.randn_like
        rec = self

        def randn_like(x, *a, **k):
            n = rec._randn_like(x, *a, **k)
            rec.noise.append(n.clone())
            return n

        th.randn_like = randn_like
        self._pmv = self.diffusion.p_mean_variance
        orig = self._pmv

        def pmv(*a, **k):
            out = orig(*a, **k)
            rec.mean.append(out["mean"].detach().clone())
            rec.logvar.append(out["log_variance"].detach().clone())
            return out

        self.diffusion.p_mean_variance = pmv
        return self

    def __exit__(self, *exc):
        self.th.randn_like = self._randn_like
        del self.diffusion.p_mean_variance
        return False


# ------------------------------------------------------------------------------------------------ sections


def sec_schedules(c):
    from glide_text2im.gaussian_diffusion import get_named_beta_schedule
    from glide_text2im.respace import SpacedDiffusion, space_timesteps

    w = c.w
    for name in ("squaredcos_cap_v2", "linear"):
        w.save(f"schedules/betas_{name}_1000", np.asarray(get_named_beta_schedule(name, 1000), dtype=np.float64))
    for spec, name, short in (("15", "squaredcos_cap_v2", "cos"), ("12", "linear", "lin")):
        betas = get_named_beta_schedule(name, 1000)
        d = SpacedDiffusion(use_timesteps=space_timesteps(1000, spec), betas=betas)
        save_tables(w, f"schedules/respaced{spec}_{short}", d)


def space_sets():
    from glide_text2im.respace import space_timesteps

    return {
        f"space_timesteps_{T}": {spec: sorted(int(x) for x in space_timesteps(T, spec)) for spec in specs}
        for T, specs in RESPACING_SPECS.items()
    }


def sec_unit(c):
    from glide_text2im.nn import timestep_embedding

    th = c.th
    t = th.tensor([0, 1, 7, 42, 250, 333, 500, 640, 998, 999], dtype=th.long)
    c.w.save("unit/timestep_embedding_t", i64(t))
    for dim in (96, 33, 256):
        c.w.save(f"unit/timestep_embedding_dim{dim}", f32(timestep_embedding(t, dim)))


def sec_glide_fwd(c):
    from glide_text2im.nn import timestep_embedding

    th = c.th
    model, _ = c.glide()
    w = c.w
    S = SMALL_GLIDE["image_size"]
    x = c.randn((3, 3, S, S), 1)
    t = th.tensor([999, 517, 3], dtype=th.long)
    tokens, mask = c.glide_tokens([PROMPTS[0], PROMPTS[1], ""])
    acts = {}
    hooks = []
    for i, blk in enumerate(model.input_blocks):
        hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(f"input_blocks.{i:02d}", o)))
    hooks.append(model.middle_block.register_forward_hook(lambda m, a, o: acts.__setitem__("middle_block", o)))
    for i, blk in enumerate(model.output_blocks):
        hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(f"output_blocks.{i:02d}", o)))
    with th.no_grad():
        text = model.get_text_emb(tokens, mask)
        raw = timestep_embedding(t, SMALL_GLIDE["num_channels"])
        temb = model.time_embed(raw)
        t0 = time.perf_counter()
        out = model(x, t, tokens=tokens, mask=mask)
        c.timings["glide_small_forward_b3"] = {"s": time.perf_counter() - t0}
    for h in hooks:
        h.remove()
    w.save("glide_fwd/in_x", f32(x))
    w.save("glide_fwd/in_t", i64(t))
    w.save("glide_fwd/in_tokens", i64(tokens))
    w.save("glide_fwd/in_mask", mask.numpy().astype(np.uint8))
    w.save("glide_fwd/text_xf_proj", f32(text["xf_proj"]))
    w.save("glide_fwd/text_xf_out_NCL", f32(text["xf_out"]))
    w.save("glide_fwd/timestep_embedding_raw", f32(raw))
    w.save("glide_fwd/act_time_embed", f32(temb))
    for k, v in acts.items():
        w.save(f"glide_fwd/act_{k}", f32(v))
    w.save("glide_fwd/out", f32(out))


def sec_glide_cfg(c):
    th = c.th
    model, diffusion = c.glide()
    w = c.w
    S = SMALL_GLIDE["image_size"]
    n = len(PROMPTS)
    tokens, mask = c.glide_tokens(PROMPTS + [""] * n)
    raws, guided, xins, tms = [], [], [], []

    def model_fn(x_t, ts, **kwargs):
        xins.append(x_t.detach().clone())
        tms.append(ts.detach().clone())
        half = x_t[: len(x_t) // 2]
        combined = th.cat([half, half], dim=0)
        model_out = model(combined, ts, **kwargs)
        raws.append(model_out.detach().clone())
        eps, rest = model_out[:, :3], model_out[:, 3:]
        cond_eps, uncond_eps = th.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + GUIDANCE_SCALE * (cond_eps - uncond_eps)
        eps = th.cat([half_eps, half_eps], dim=0)
        res = th.cat([eps, rest], dim=1)
        guided.append(res.detach().clone())
        return res

    # model_fn is called through the respacing wrapper, so `ts` are the ORIGINAL timesteps.
    x_T = c.randn((2 * n, 3, S, S), 2)
    th.manual_seed(SEEDS["inputs"] + 2)
    t0 = time.perf_counter()
    with th.no_grad(), StepRecorder(th, diffusion) as rec:
        samples = diffusion.p_sample_loop(
            model_fn,
            (2 * n, 3, S, S),
            noise=x_T.clone(),
            clip_denoised=True,
            model_kwargs=dict(tokens=tokens, mask=mask),
            device=th.device("cpu"),
            progress=False,
        )
    c.timings[f"glide_small_cfg_sampling_{len(xins)}steps_b{2 * n}"] = {"s": time.perf_counter() - t0}
    steps = len(xins)
    w.save("glide_cfg/in_tokens", i64(tokens))
    w.save("glide_cfg/in_mask", mask.numpy().astype(np.uint8))
    w.save("glide_cfg/x_T", f32(x_T))
    w.save("glide_cfg/noise_per_step", np.stack([f32(a) for a in rec.noise]))
    w.save("glide_cfg/step_t_respaced", np.arange(steps - 1, -1, -1, dtype=np.int64))
    w.save("glide_cfg/step_t_model", np.stack([i64(t) for t in tms]))
    w.save("glide_cfg/step_x_in", np.stack([f32(a) for a in xins]))
    w.save("glide_cfg/step_model_raw", np.stack([f32(a) for a in raws]))
    w.save("glide_cfg/step_model_guided", np.stack([f32(a) for a in guided]))
    w.save("glide_cfg/step_mean", np.stack([f32(a) for a in rec.mean]))
    w.save("glide_cfg/step_log_variance", np.stack([f32(a) for a in rec.logvar]))
    w.save("glide_cfg/samples_full_batch", f32(samples))
    w.save("glide_cfg/samples", f32(samples[:n]))
    w.save("glide_cfg/samples_uint8", ((samples[:n] + 1) * 127.5).round().clamp(0, 255).to(th.uint8).numpy().astype(np.int64))
    save_tables(w, "glide_cfg/diffusion", diffusion)
    assert steps == len(rec.noise) == len(rec.mean), (steps, len(rec.noise), len(rec.mean))


def sec_glide_ddim(c):
    from glide_text2im.gaussian_diffusion import get_named_beta_schedule
    from glide_text2im.respace import SpacedDiffusion, space_timesteps

    th = c.th
    model, _ = c.glide()
    w = c.w
    S = SMALL_GLIDE["image_size"]
    betas = get_named_beta_schedule(SMALL_GLIDE["noise_schedule"], SMALL_GLIDE["diffusion_steps"])
    d = SpacedDiffusion(
        use_timesteps=space_timesteps(SMALL_GLIDE["diffusion_steps"], GLIDE_DDIM["respacing"]), betas=betas
    )
    prompts = [PROMPTS[2], PROMPTS[0]]
    tokens, mask = c.glide_tokens(prompts)
    x_T = c.randn((len(prompts), 3, S, S), 3) * GLIDE_DDIM["temp"]
    t0 = time.perf_counter()
    with th.no_grad():
        samples = d.ddim_sample_loop(
            model,
            x_T.shape,
            noise=x_T.clone(),
            clip_denoised=True,
            model_kwargs=dict(tokens=tokens, mask=mask),
            device=th.device("cpu"),
            progress=False,
            eta=GLIDE_DDIM["eta"],
        )
    c.timings[f"glide_small_{GLIDE_DDIM['respacing']}_b{len(prompts)}"] = {"s": time.perf_counter() - t0}
    w.save("glide_ddim/x_T", f32(x_T))
    w.save("glide_ddim/tokens", i64(tokens))
    w.save("glide_ddim/mask", mask.numpy().astype(np.uint8))
    w.save("glide_ddim/samples", f32(samples))
    w.save("glide_ddim/timestep_map", np.asarray(d.timestep_map, dtype=np.int64))
    return [int(x) for x in d.timestep_map]


def sec_gd_unet(c):
    th = c.th
    model, _ = c.gd()
    S = SMALL_GD_MODEL["image_size"]
    x = c.randn((2, 3, S, S), 4)
    t = th.tensor([871, 12], dtype=th.long)
    y = th.tensor([3, 998], dtype=th.long)
    with th.no_grad():
        t0 = time.perf_counter()
        out = model(x, t, y=y)
        c.timings["gd_unet_small_forward_b2"] = {"s": time.perf_counter() - t0}
    c.w.save("gd_unet/fwd_in_x", f32(x))
    c.w.save("gd_unet/fwd_in_t", i64(t))
    c.w.save("gd_unet/fwd_in_y", i64(y))
    c.w.save("gd_unet/fwd_out", f32(out))


def classifier_cond_fn(th, classifier):
    import torch.nn.functional as F

    def cond_fn(x, t, y=None):
        with th.enable_grad():
            x_in = x.detach().requires_grad_(True)
            logits = classifier(x_in, t)
            log_probs = F.log_softmax(logits, dim=-1)
            selected = log_probs[range(len(logits)), y.view(-1)]
            return th.autograd.grad(selected.sum(), x_in)[0] * CLASSIFIER_SCALE

    return cond_fn


GD_Y = [207, 1, 640]


def sec_gd_classifier(c):
    th = c.th
    classifier = c.classifier()
    S = SMALL_GD_CLASSIFIER["image_size"]
    x = c.randn((len(GD_Y), 3, S, S), 5)
    t = th.tensor([5, 480, 990], dtype=th.long)
    y = th.tensor(GD_Y, dtype=th.long)
    with th.no_grad():
        logits = classifier(x, t)
    t0 = time.perf_counter()
    grad = classifier_cond_fn(th, classifier)(x, t, y=y)
    c.timings[f"gd_classifier_small_cond_fn_b{len(GD_Y)}"] = {"s": time.perf_counter() - t0}
    c.w.save("gd_classifier/in_x", f32(x))
    c.w.save("gd_classifier/in_t", i64(t))
    c.w.save("gd_classifier/in_y", i64(y))
    c.w.save("gd_classifier/logits", f32(logits))
    c.w.save("gd_classifier/cond_grad", f32(grad))


def sec_gd_guided(c):
    th = c.th
    model, diffusion = c.gd()
    classifier = c.classifier()
    S = SMALL_GD_MODEL["image_size"]
    y = th.tensor(GD_Y, dtype=th.long)
    x_T = c.randn((len(GD_Y), 3, S, S), 6)

    def model_fn(x, t, y=None):
        return model(x, t, y)

    th.manual_seed(SEEDS["inputs"] + 6)
    t0 = time.perf_counter()
    with StepRecorder(th, diffusion) as rec:
        samples = diffusion.p_sample_loop(
            model_fn,
            x_T.shape,
            noise=x_T.clone(),
            clip_denoised=True,
            model_kwargs={"y": y},
            cond_fn=classifier_cond_fn(th, classifier),
            device=th.device("cpu"),
            progress=False,
        )
    c.timings[f"gd_small_classifier_guided_sampling_{len(rec.noise)}steps_b{len(GD_Y)}"] = {
        "s": time.perf_counter() - t0
    }
    c.w.save("gd_guided/x_T", f32(x_T))
    c.w.save("gd_guided/noise_per_step", np.stack([f32(a) for a in rec.noise]))
    c.w.save("gd_guided/samples", f32(samples))
    save_tables(c.w, "gd_guided/diffusion", diffusion)


def sec_clip(c):
    th = c.th
    clip = c.clip()
    model, diffusion = c.glide()
    S = SMALL_GLIDE["image_size"]
    w = c.w
    te, ie = clip.text_encoder, clip.image_encoder
    w.save("clip/text_attn_bias", f32(te.blocks["block_0"].f_attn.attn_fn.pytorch_attn_bias))
    w.save("clip/image_attn_bias", f32(ie.blocks["block_0"].f_attn.attn_fn.pytorch_attn_bias))
    tokens, lens = clip.encode_prompts(PROMPTS)
    w.save("clip/text_tokens", i64(tokens))
    w.save("clip/text_lens", i64(lens))
    with th.no_grad():
        z_t_raw = te(tokens, lens)
        z_t = clip.text_embeddings(PROMPTS)
    w.save("clip/z_t_raw", f32(z_t_raw))
    w.save("clip/z_t", f32(z_t))
    x = c.randn((len(PROMPTS), 3, S, S), 7)
    k = 6
    t_resp = th.tensor([k] * len(PROMPTS), dtype=th.long)
    t_orig = th.tensor([diffusion.timestep_map[k]] * len(PROMPTS), dtype=th.long)
    w.save("clip/cond_in_x", f32(x))
    w.save("clip/cond_in_t_respaced", i64(t_resp))
    w.save("clip/cond_in_t_original", i64(t_orig))
    with th.no_grad():
        z_i_raw = ie((x + 1) * 127.5, t_orig)
        z_i = clip.image_embeddings(x, t_orig)
        loss = th.exp(clip.logit_scale) * (z_t * z_i).sum()
    w.save("clip/z_i_raw", f32(z_i_raw))
    w.save("clip/z_i", f32(z_i))
    w.save("clip/loss", f32(loss.reshape(1)))
    cond_fn = clip.cond_fn(PROMPTS, CLIP_GUIDANCE_SCALE)
    t0 = time.perf_counter()
    grad = cond_fn(x, t_orig)
    c.timings[f"clip_small_cond_fn_b{len(PROMPTS)}"] = {"s": time.perf_counter() - t0}
    w.save("clip/cond_grad", f32(grad))
    gtok, gmask = c.glide_tokens(PROMPTS)
    kw = dict(tokens=gtok, mask=gmask)
    with th.no_grad():
        pmv = diffusion.p_mean_variance(model, x, t_resp, clip_denoised=True, model_kwargs=kw)
    cm = diffusion.condition_mean(cond_fn, pmv, x, t_resp, model_kwargs=kw)
    w.save("clip/pmv_mean", f32(pmv["mean"]))
    w.save("clip/pmv_variance", f32(pmv["variance"]))
    w.save("clip/pmv_log_variance", f32(pmv["log_variance"]))
    w.save("clip/pmv_pred_xstart", f32(pmv["pred_xstart"]))
    w.save("clip/conditioned_mean", f32(cm))


def sec_clip_guided(c):
    th = c.th
    clip = c.clip()
    model, diffusion = c.glide()
    S = SMALL_GLIDE["image_size"]
    tokens, mask = c.glide_tokens(PROMPTS)
    x_T = c.randn((len(PROMPTS), 3, S, S), 8)
    cond_fn = clip.cond_fn(PROMPTS, CLIP_GUIDANCE_SCALE)
    th.manual_seed(SEEDS["inputs"] + 8)
    t0 = time.perf_counter()
    with StepRecorder(th, diffusion) as rec:
        samples = diffusion.p_sample_loop(
            model,
            x_T.shape,
            noise=x_T.clone(),
            clip_denoised=True,
            model_kwargs=dict(tokens=tokens, mask=mask),
            cond_fn=cond_fn,
            device=th.device("cpu"),
            progress=False,
        )
    c.timings[f"glide_small_clip_guided_sampling_{len(rec.noise)}steps_b{len(PROMPTS)}"] = {
        "s": time.perf_counter() - t0
    }
    c.w.save("clip_guided/x_T", f32(x_T))
    c.w.save("clip_guided/noise_per_step", np.stack([f32(a) for a in rec.noise]))
    c.w.save("clip_guided/tokens", i64(tokens))
    c.w.save("clip_guided/mask", mask.numpy().astype(np.uint8))
    c.w.save("clip_guided/samples", f32(samples))


def tokenizer_cases(c, prompts):
    from glide_text2im.tokenizer.bpe import get_encoder
    from glide_text2im.tokenizer.simple_tokenizer import SimpleTokenizer

    g = get_encoder()
    s = SimpleTokenizer()
    cases = []
    for p in prompts:
        gb = g.encode(p.lower())
        gp, gm = g.padded_tokens_and_mask(gb, 128)
        cb = s.encode(p)
        cp, cl = s.padded_tokens_and_len(cb, 77)
        cases.append(
            {
                "prompt": p,
                "glide_bpe": gb,
                "glide_padded_len128": gp,
                "glide_mask_len128": [bool(m) for m in gm],
                "clip_bpe": cb,
                "clip_padded_len77": cp,
                "clip_len": cl,
            }
        )
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glide", required=True, help="path of an openai/glide-text2im checkout")
    ap.add_argument("--guided-diffusion", required=True, help="path of an openai/guided-diffusion checkout")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sections", nargs="*", default=ALL_SECTIONS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup_paths(args.glide, args.guided_diffusion)
    import torch as th

    th.set_num_threads(args.threads)
    os.makedirs(os.path.join(args.out, "weights"), exist_ok=True)
    c = Ctx(args)
    # Re-running some sections into an existing directory keeps the other sections' manifest entries.
    old = os.path.join(args.out, "manifest.json")
    prev_meta = {}
    if os.path.exists(old):
        with open(old) as f:
            prev = json.load(f)
        c.w.arrays.update(prev.get("arrays", {}))
        prev_meta = prev.get("meta", {})
        c.meta_params.update(prev_meta.get("params", {}))
        c.timings.update(prev_meta.get("timings", {}))
    # Models are built (and their weight files written) in a fixed order, whatever the sections.
    wall0 = time.perf_counter()
    extra = {}
    def write_manifest():
        meta = {
            "tokenizers": {
                "glide": {
                    "n_vocab": 50257,
                    "end_token": 50256,
                    "note": "GPT-2 BPE on text.lower(); pad with end_token; mask True on real tokens; no SOT/EOT added",
                },
                "clip": {
                    "n_vocab": 49408,
                    "sot": 49406,
                    "eot": 49407,
                    "note": "CLIP BPE; [SOT]+tokens[:75]+[EOT], pad with 0; ftfy stubbed as identity",
                },
                "cases": tokenizer_cases(c, PROMPTS + ["", "Zebra crossing: 12 stripes, 3 dogs & a CAT!"]),
            },
            **space_sets(),
            "glide_ddim": {**GLIDE_DDIM, **({"timestep_map": extra["timestep_map"]} if "timestep_map" in extra else {})},
            "generator": "tools/golden/make_golden.py",
            "seeds": SEEDS,
            "prompts": PROMPTS,
            "guidance_scale": GUIDANCE_SCALE,
            "clip_guidance_scale": CLIP_GUIDANCE_SCALE,
            "classifier_scale": CLASSIFIER_SCALE,
            "small_glide": SMALL_GLIDE,
            "small_clip": SMALL_CLIP,
            "small_gd_classifier": SMALL_GD_CLASSIFIER,
            "small_gd_model": SMALL_GD_MODEL,
            "reinit_rule": REINIT_RULE,
            "params": c.meta_params,
            "timings": c.timings,
            "flops": {},
            "env": {
                "torch": th.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "threads": th.get_num_threads(),
                "cpu": platform.machine(),
            },
            "total_wall_s": time.perf_counter() - wall0,
        }
        with open(os.path.join(args.out, "manifest.json"), "w") as f:
            json.dump({"meta": meta, "arrays": c.w.arrays}, f, indent=1)

    if "timestep_map" not in extra and "timestep_map" in prev_meta.get("glide_ddim", {}):
        extra["timestep_map"] = prev_meta["glide_ddim"]["timestep_map"]
    for name in args.sections:
        if name not in ALL_SECTIONS:
            raise SystemExit(f"unknown section {name}")
        t0 = time.perf_counter()
        r = globals()[f"sec_{name}"](c)
        if name == "glide_ddim":
            extra["timestep_map"] = r
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
        write_manifest()
    write_manifest()
    print(f"wrote {args.out}: {len(c.w.arrays)} arrays")


if __name__ == "__main__":
    main()

"""Replays the golden set's CLIP-guided loop with the official glide-text2im code, to measure how much it moves.

The golden set (`../shared/golden/clip_guided/`) stores only this loop's final samples, and a port lands about 1e-4
from them (`verify-reference`, README). This replays the official loop on the golden weights, tokens, x_T and
recorded noise and prints how far its final samples land from the golden ones under the thread settings given:
with OpenBLAS at 1 thread and torch at 2 (the defaults) it reproduces the golden samples bit for bit; other
settings show how much of the 1e-4 is the loop's own amplification of rounding. `--out DIR` writes every state ([steps + 1, B, C, H, W], x_T first) as step_x_in.npy.

Glue only: it imports glide_text2im from the checkout the user names (the project never contains the official code).

Usage: python3 clip_guided_replay.py --checkout DIR --golden DIR [--blas-threads 1] [--torch-threads 2] [--out DIR]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from glide_torch import load_safetensors, stub_regex  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkout", required=True)
    p.add_argument("--golden", required=True)
    p.add_argument("--blas-threads", type=int, default=1, help="OpenMP/OpenBLAS pool size (the golden set: 1)")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (the golden set: 2)")
    p.add_argument("--out")
    a = p.parse_args()
    # The pools read their sizes when NumPy and torch load, hence before the imports.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(a.blas_threads)

    import numpy as np
    import torch as th

    th.set_num_threads(a.torch_threads)
    stub_regex()
    # glide_text2im's CLIP attention masks use np.bool, which NumPy 1.24 removed.
    if "bool" not in np.__dict__:
        np.bool = bool
    sys.path.insert(0, os.path.abspath(a.checkout))
    from glide_text2im import gaussian_diffusion
    from glide_text2im.clip.encoders import ImageEncoder, TextEncoder
    from glide_text2im.model_creation import create_model_and_diffusion

    g = a.golden
    meta = json.load(open(os.path.join(g, "manifest.json")))["meta"]
    flags = dict(meta["small_glide"], use_fp16=False)
    model, diffusion = create_model_and_diffusion(**flags)
    model.eval()
    missing, unexpected = model.load_state_dict(
        load_safetensors(os.path.join(g, "weights", "glide_small.safetensors"), th), strict=False
    )
    if missing or unexpected:
        raise SystemExit(f"glide_small: missing {missing[:3]}, unexpected {unexpected[:3]}")

    c = meta["small_clip"]
    text = TextEncoder(
        n_bpe_vocab=c["n_vocab"], max_text_len=c["max_text_len"], n_embd=c["n_embd"], n_head=c["n_head_text"],
        n_xf_blocks=c["n_xf_blocks_text"], n_head_state=c["n_head_state_text"], device=th.device("cpu"),
    )
    image = ImageEncoder(
        image_size=c["image_size"], patch_size=c["patch_size"], n_embd=c["n_embd"], n_head=c["n_head_image"],
        n_xf_blocks=c["n_xf_blocks_image"], n_head_state=c["n_head_state_image"], n_timestep=c["n_timesteps"],
        device=th.device("cpu"),
    )
    clip_w = load_safetensors(os.path.join(g, "weights", "clip_small.safetensors"), th)
    for prefix, mod in (("text_encoder.", text), ("image_encoder.", image)):
        sd = {k[len(prefix):]: v for k, v in clip_w.items() if k.startswith(prefix)}
        missing, unexpected = mod.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise SystemExit(f"clip_small {prefix}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    logit_scale = clip_w["logit_scale"].reshape(())

    def npy(*parts):
        return np.load(os.path.join(g, *parts))

    x_T = th.from_numpy(npy("clip_guided", "x_T.npy"))
    noise = th.from_numpy(npy("clip_guided", "noise_per_step.npy"))
    tokens = th.from_numpy(npy("clip_guided", "tokens.npy")).long()
    mask = th.from_numpy(npy("clip_guided", "mask.npy")).bool()
    b = x_T.shape[0]
    # The clip section's tokens encode meta.prompts in order; the loop samples the first b of them.
    clip_tokens = th.from_numpy(npy("clip", "text_tokens.npy")).long()[:b]
    clip_lens = th.from_numpy(npy("clip", "text_lens.npy")).long()[:b]
    scale = float(meta["clip_guidance_scale"])

    # CLIPModel.cond_fn, with the golden CLIP tokens instead of its tokenizer.
    with th.no_grad():
        z_t = text(clip_tokens, clip_lens)
        z_t = z_t / (th.linalg.norm(z_t, dim=-1, keepdim=True) + 1e-12)

    def cond_fn(x, t, **kwargs):
        with th.enable_grad():
            x_var = x.detach().requires_grad_(True)
            z_i = image((x_var + 1) * 127.5, t)
            z_i = z_i / (th.linalg.norm(z_i, dim=-1, keepdim=True) + 1e-12)
            loss = th.exp(logit_scale) * (z_t * z_i).sum()
            return th.autograd.grad(loss, x_var)[0].detach() * scale

    draws = iter(noise)
    gaussian_diffusion.th.randn_like = lambda x: next(draws).to(x.dtype)  # replay the recorded noise in order
    steps = [x_T.clone()]
    with th.no_grad():
        for out in diffusion.p_sample_loop_progressive(
            model, tuple(x_T.shape), noise=x_T, clip_denoised=True, model_kwargs=dict(tokens=tokens, mask=mask),
            cond_fn=cond_fn, device=th.device("cpu"), progress=False,
        ):
            steps.append(out["sample"].clone())
    ref = th.from_numpy(npy("clip_guided", "samples.npy"))
    rel = float((steps[-1] - ref).abs().max() / ref.abs().max())
    print(
        json.dumps(
            {
                "blas_threads": a.blas_threads,
                "torch_threads": a.torch_threads,
                "final_vs_golden_rel": rel,
            }
        )
    )
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        np.save(os.path.join(a.out, "step_x_in.npy"), th.stack(steps).numpy().astype(np.float32))


if __name__ == "__main__":
    main()

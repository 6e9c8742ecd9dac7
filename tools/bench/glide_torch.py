"""Times the official glide-text2im code on the inputs `npm run bench -- --compare-torch PATH` wrote.

Glue only: it imports glide_text2im from the checkout the user names (the project never contains the official
code), builds the model from the official flags (float32: use_fp16 off, as on any CPU), loads the weights given
(a safetensors file with the official names, e.g. the golden small GLIDE), and prints one JSON object on stdout:
the forward's median/min seconds, the classifier-free-guided sampling seconds per step (the text2im notebook's
model_fn and p_sample_loop), and the forward output (for the caller's agreement check) as an .npy file.

Usage: python3 glide_torch.py --checkout DIR --flags FLAGS.json --inputs DIR [--weights W.safetensors]
       [--threads 2] [--min-seconds 3] [--cfg-steps 20] [--scale 3] [--pad 50256]
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time
import types


def stub_regex():
    # bpe.py compiles its pattern with the third-party `regex` at model construction; the tokenizer is never used
    # here (token ids come from the inputs), so a missing `regex` must not stop the timing.
    try:
        import regex  # noqa: F401
    except ImportError:
        mod = types.ModuleType("regex")
        mod.compile = lambda *a, **k: None
        sys.modules["regex"] = mod
        print("note: python module 'regex' missing; stubbed (the GLIDE tokenizer is not used)", file=sys.stderr)


def blas_library():
    """The BLAS shared library this process mapped (torch's speed depends on it: Debian's reference libblas3 is
    ~10x slower than OpenBLAS), or "" when none shows in /proc/self/maps."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    except OSError:
        return ""
    return ", ".join(sorted(libs))


def load_safetensors(path, torch):
    """A safetensors file as {name: float32 tensor} (F16/F32/BF16), read with the stdlib and numpy only."""
    import numpy as np

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    kinds = {"F16": np.float16, "F32": np.float32}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        if info["dtype"] not in kinds:
            raise SystemExit(f"{path}: {name} has dtype {info['dtype']} (F16/F32 expected)")
        arr = np.frombuffer(data[lo:hi], dtype=kinds[info["dtype"]]).astype(np.float32).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkout", required=True)
    p.add_argument("--flags", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--weights")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--cfg-steps", type=int, default=20)
    p.add_argument("--scale", type=float, default=3.0)
    p.add_argument("--pad", type=int, default=50256, help="GLIDE's padding token (GPT-2: 50256)")
    a = p.parse_args()

    import numpy as np
    import torch as th

    th.set_num_threads(a.threads)
    stub_regex()
    sys.path.insert(0, os.path.abspath(a.checkout))
    from glide_text2im.model_creation import create_model_and_diffusion

    flags = json.load(open(a.flags))
    flags["use_fp16"] = False
    flags["timestep_respacing"] = str(a.cfg_steps)
    model, diffusion = create_model_and_diffusion(**flags)
    model.eval()
    if a.weights:
        missing, unexpected = model.load_state_dict(load_safetensors(a.weights, th), strict=False)
        if missing or unexpected:
            raise SystemExit(f"{a.weights}: missing {missing[:3]}, unexpected {unexpected[:3]}")

    def npy(name):
        return np.load(os.path.join(a.inputs, name))

    x = th.from_numpy(npy("x.npy"))  # NCHW
    t = th.from_numpy(npy("t.npy")).long()
    tokens = th.from_numpy(npy("tokens.npy")).long()
    mask = th.from_numpy(npy("mask.npy")) > 0.5

    times = []
    with th.no_grad():
        out = model(x, t, tokens=tokens, mask=mask)  # warm-up
        t0 = time.perf_counter()
        while len(times) < 2 or time.perf_counter() - t0 < a.min_seconds:
            s = time.perf_counter()
            out = model(x, t, tokens=tokens, mask=mask)
            times.append(time.perf_counter() - s)
    np.save(os.path.join(a.inputs, "torch_out.npy"), out.numpy().astype(np.float32))

    # The text2im notebook's classifier-free guidance: [cond; uncond] rows, guided eps in both halves.
    b = x.shape[0]
    half = b // 2
    ctx = tokens.shape[1]
    kw = dict(
        tokens=th.cat([tokens[:half], th.full((half, ctx), a.pad, dtype=th.long)]),
        mask=th.cat([mask[:half], th.zeros((half, ctx), dtype=th.bool)]),
    )

    def model_fn(x_t, ts, **kwargs):
        h = x_t[: len(x_t) // 2]
        combined = th.cat([h, h], dim=0)
        model_out = model(combined, ts, **kwargs)
        eps, rest = model_out[:, :3], model_out[:, 3:]
        cond_eps, uncond_eps = th.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + a.scale * (cond_eps - uncond_eps)
        eps = th.cat([half_eps, half_eps], dim=0)
        return th.cat([eps, rest], dim=1)

    th.manual_seed(0)
    t0 = time.perf_counter()
    diffusion.p_sample_loop(
        model_fn, tuple(x.shape), device="cpu", clip_denoised=True, progress=False, model_kwargs=kw, cond_fn=None
    )
    cfg_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "torch": th.__version__,
                "threads": th.get_num_threads(),
                "blas": blas_library(),
                "forward_s": {"median": statistics.median(times), "min": min(times), "reps": len(times)},
                "cfg_step_s": cfg_s / a.cfg_steps,
                "cfg_steps": a.cfg_steps,
                "out": "torch_out.npy",
            }
        )
    )


if __name__ == "__main__":
    main()

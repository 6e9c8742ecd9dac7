#!/usr/bin/env python3
"""Reference trajectories of CFG++ (Chung et al. 2025, arXiv 2406.08070) from the authors' own solvers, for
test/cfgpp-reference.test.ts: DDIM (`ddim_cfg++`, BaseDDIMCFGpp), Euler (`euler_cfg++`), ancestral Euler
(`euler_a_cfg++`, η = 1) and DPM-Solver++(2M) (`dpm++_2m_cfg++`) of CFGpp-diffusion/CFGpp's latent_diffusion.py.

The reference file is imported from a checkout passed by path, never copied. What ties it to Stable Diffusion is
replaced on the solver object, not in its update maths: the U-Net by a fixed toy ε-model of (x, t) whose every call
(input, unconditional and conditional ε) is recorded, so that our port can be teacher-forced on the reference's own
model outputs; the initial latent by a stored x_T (σ-space: x_T·σ_0, as k-diffusion and our port start; the
authors scale by sqrt(σ_0² + 1) and cast to float16, a start-up choice outside the update); the schedule by our
tables (guided-diffusion's linear β, T = 1000; DDIM on "ddim5" respacing, the σ-space solvers on k-diffusion's
Karras σs — the authors' get_sigmas_karras drops σ_min, ramp = linspace(0, 1, n + 1)[:-1]; ours and ComfyUI's
keep it, so the module's function is replaced by k-diffusion's form; the solvers' float16 cast of the start is kept,
and each σ-space case records the x_T it amounts to). `diffusers` and `tqdm` (imported, unused on
this path) are stubbed; the per-step trajectory comes through the solvers' own callback. Ancestral noise is the
stored per-step noise, served to the solver's torch.randn_like in order.

    git clone https://github.com/CFGpp-diffusion/CFGpp /tmp/CFGpp   # 8035352 was used
    /usr/bin/python3 tools/golden/cfgpp_golden.py --cfgpp /tmp/CFGpp --out test/fixtures/cfgpp/reference.json
"""
import argparse
import json
import math
import subprocess
import sys
import types

import numpy as np
import torch

T = 1000
STEPS = 5
LAMBDA = 0.7
SHAPE = (1, 3, 4, 4)  # NCHW; the fixture stores NHWC, as our port computes
SEED = 2406


def stub_imports():
    diffusers = types.ModuleType("diffusers")
    diffusers.DDIMScheduler = diffusers.StableDiffusionPipeline = None
    sys.modules.setdefault("diffusers", diffusers)
    try:
        import tqdm  # noqa: F401
    except ImportError:
        tq = types.ModuleType("tqdm")
        tq.tqdm = lambda it=None, **k: it
        sys.modules["tqdm"] = tq


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32).reshape(-1).tolist()


def toy_eps(x, t):
    """A fixed, nonlinear ε-model pair (float32): the conditional and unconditional branches differ everywhere."""
    ch = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    tt = float(t) / T
    eps_c = torch.tanh(0.8 * x + 0.3 * torch.sin(ch + 3.0 * tt))
    eps_u = 0.9 * torch.tanh(0.7 * x - 0.2 + 0.1 * ch * tt)
    return eps_u, eps_c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfgpp", required=True, help="a checkout of CFGpp-diffusion/CFGpp")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    stub_imports()
    sys.path.insert(0, a.cfgpp)
    import latent_diffusion as ld

    commit = subprocess.run(
        ["git", "-C", a.cfgpp, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    total_alphas = torch.tensor(abar, dtype=torch.float64)

    def karras(n, sigma_min, sigma_max, rho=7.0, device="cpu"):
        # k-diffusion's get_sigmas_karras (ramp ends at σ_min), in float64
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        lo, hi = float(sigma_min) ** (1 / rho), float(sigma_max) ** (1 / rho)
        return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])

    ld.get_sigmas_karras = karras

    g = torch.Generator().manual_seed(SEED)
    x_t = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    noise = [torch.randn(SHAPE, generator=g, dtype=torch.float32) for _ in range(STEPS)]

    real_randn_like = torch.randn_like

    def run(solver_name, kind):
        cls = ld.__SOLVER__[solver_name]
        s = object.__new__(cls)
        s.device = "cpu"
        s.total_alphas = total_alphas
        s.sigmas = ((1 - total_alphas) / total_alphas).sqrt()
        s.log_sigmas = s.sigmas.log()
        s.scheduler = types.SimpleNamespace(timesteps=list(range(STEPS)))
        s.get_text_embed = lambda null_prompt, prompt: ("uc", "c")
        s.decode = lambda z: z
        calls = []

        def predict_noise(zt, t, uc, c):
            eps_u, eps_c = toy_eps(zt.float(), t)
            # the first σ-space input is float16 (the solvers' cast start, divided in float16)
            calls.append({"x": nhwc(zt), "x_dtype": str(zt.dtype).replace("torch.", ""), "eps_u": nhwc(eps_u), "eps_c": nhwc(eps_c)})
            return eps_u, eps_c

        s.predict_noise = predict_noise
        meta = {}
        if kind == "ddim":
            # our "ddim5" respacing of T = 1000: timesteps 0, 200, …, 800 (guided-diffusion's space_timesteps)
            ts = list(range(0, T, T // STEPS))
            table = [float(abar[t]) for t in ts]
            s.scheduler.timesteps = list(reversed(range(STEPS)))
            s.alpha = lambda i: torch.tensor(table[i] if i >= 0 else 1.0, dtype=torch.float64)
            s.skip = 1
            s.initialize_latent = lambda **k: x_t.clone()
            meta["alphas_cumprod"] = table
        else:
            def init(method=None, latent_dim=None, sigmas=None, **k):
                meta["sigmas"] = [float(v) for v in sigmas]
                # The solver casts the start to float16 (`.to(torch.float16)` after this call); the case records
                # the x_T that start is x_T·σ_0 of, so that our port starts where the reference does.
                start = (x_t * sigmas[0]).float()
                meta["xT"] = nhwc((start.half().double() / float(sigmas[0])).float())
                return start

            s.initialize_latent = init
        traj = []

        def callback(i, t, kw):
            traj.append(nhwc(kw["zt"]))
            return kw

        drawn = iter(noise)
        torch.randn_like = lambda x, **k: next(drawn).to(x.dtype)
        try:
            s.sample(cfg_guidance=LAMBDA, prompt=["", "p"], callback_fn=callback)
        finally:
            torch.randn_like = real_randn_like
        return {"solver": solver_name, "calls": calls, "trajectory": traj, **meta}

    cases = [
        {"sampler": "ddim", **run("ddim_cfg++", "ddim")},
        {"sampler": "euler", **run("euler_cfg++", "sigma")},
        {"sampler": "euler_ancestral", "eta": 1, **run("euler_a_cfg++", "sigma")},
        {"sampler": "dpmpp_2m", **run("dpm++_2m_cfg++", "sigma")},
    ]
    for c in cases:
        assert len(c["calls"]) == STEPS and len(c["trajectory"]) == STEPS, c["solver"]
    out = {
        "meta": {
            "generator": "tools/golden/cfgpp_golden.py",
            "reference": f"CFGpp-diffusion/CFGpp@{commit} latent_diffusion.py",
            "torch": torch.__version__,
            "schedule": {"beta": "linear", "T": T},
            "steps": STEPS,
            "lambda": LAMBDA,
            "shape_nhwc": [SHAPE[0], SHAPE[2], SHAPE[3], SHAPE[1]],
            "seed": SEED,
        },
        "xT": nhwc(x_t),
        "noise": [nhwc(n) for n in noise],
        "cases": cases,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {a.out}: {len(cases)} cases, {sum(len(c['calls']) for c in cases)} calls")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden trajectories of k-diffusion's own sampler functions (and diffusers' UniPCMultistepScheduler) on the golden
GLIDE-small denoiser, in the golden-directory format (manifest.json + kdiffusion/*.npy), for the `kdiffusion`
section of `guidance-lab verify-reference`.

The reference code is imported from checkouts passed by path, never copied: crowsonkb/k-diffusion
(k_diffusion/sampling.py and external.py's DiscreteEpsDDPMDenoiser), huggingface/diffusers
(schedulers/scheduling_unipc_multistep.py) and openai/glide-text2im (the model). Modules those files import but the
functions used here never call (torchsde, torchdiffeq, scipy, tqdm, torchvision, safetensors; diffusers' config and
hub machinery; the GPT-2 tokenizer's `regex`) are stubbed. The GLIDE-small weights are read from the shared golden
set (weights/glide_small.safetensors, its manifest's meta.small_glide config), and the prompt tokens from its
glide_cfg/in_tokens.npy, so the model is the one every other golden section checks.

    /usr/bin/python3 tools/golden/kdiffusion_golden.py --kdiffusion /tmp/k-diffusion --diffusers /tmp/diffusers \
        --glide /tmp/glide-text2im --golden /work/shared/golden --out test/fixtures/golden-kdiffusion [--threads 2]
    # the reference's own spread: a second run under other thread settings, compared with the first
    /usr/bin/python3 tools/golden/kdiffusion_golden.py ... --threads 1 --out /tmp/kd1 --compare test/fixtures/golden-kdiffusion

Cases: every k-diffusion sampler named below (unguided = the conditional model alone, and classifier-free guidance
at s = 3 formed on eps as GLIDE's notebook does) on k-diffusion's default σs (get_sigmas, `STEPS` steps); euler and
dpmpp_2m also on Karras and exponential σs; UniPC (bh2, order 2, diffusers' defaults) through the scheduler's own
step(). Stochastic samplers get the stored per-step noise through `noise_sampler` (our port feeds the same noise).
"""
import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
import types

import numpy as np

STEPS = 8
# x_T at 16×16: the convolutional GLIDE-small runs on any multiple of 8, at 1/16 of its 64×64 cost (the trajectories
# are long: about 300 forwards in all).
SIZE = 16
CFG_SCALE = 3.0
SEED = 1616
# Environment variables that select the CPU kernels torch 1.13 dispatches to (ATen's vectorised ops, oneDNN's
# convolutions, OpenBLAS's GEMM): set, this machine computes as a CPU without AVX2 (or without AVX) would.
CPU_ENV = ["ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE"]
KD_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"]
EXTRA_SCHEDULES = {"euler": ["karras", "exponential"], "dpmpp_2m": ["karras", "exponential"]}


def stub(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def install_stubs():
    for name in ["torchsde", "torchdiffeq", "scipy", "safetensors", "torchvision", "torchvision.transforms"]:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                stub(name)
    sys.modules["torchdiffeq"].odeint = getattr(sys.modules["torchdiffeq"], "odeint", None)
    if "scipy.integrate" not in sys.modules:
        try:
            importlib.import_module("scipy.integrate")
        except ImportError:
            sys.modules["scipy"].integrate = stub("scipy.integrate")
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        stub("tqdm")
        stub("tqdm.auto", trange=lambda n, **k: range(n), tqdm=lambda x=None, **k: x)
    try:
        import torchvision.transforms.functional  # noqa: F401
    except ImportError:
        sys.modules["torchvision.transforms"].functional = stub("torchvision.transforms.functional")
    try:
        import regex  # noqa: F401
    except ImportError:
        # Only the GPT-2 tokenizer's pattern uses it; prompts arrive as stored token ids.
        stub("regex", compile=lambda *a, **k: None)


def load_kdiffusion(path):
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [os.path.join(path, "k_diffusion")]
    sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")


def load_unipc(path):
    """diffusers' UniPC scheduler module with its package's config/hub machinery replaced by minimal stand-ins."""

    def register_to_config(init):
        sig = inspect.signature(init)

        def wrapped(self, *args, **kwargs):
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            self.config = types.SimpleNamespace(**{k: v for k, v in bound.arguments.items() if k != "self"})
            init(self, *args, **kwargs)

        return wrapped

    class ConfigMixin:
        def register_to_config(self, **kw):
            for k, v in kw.items():
                setattr(self.config, k, v)

    class SchedulerMixin:
        pass

    class SchedulerOutput:
        def __init__(self, prev_sample):
            self.prev_sample = prev_sample

    root = types.ModuleType("diffusers")
    root.__path__ = [os.path.join(path, "src", "diffusers")]
    sys.modules["diffusers"] = root
    sch = types.ModuleType("diffusers.schedulers")
    sch.__path__ = [os.path.join(path, "src", "diffusers", "schedulers")]
    sys.modules["diffusers.schedulers"] = sch
    stub("diffusers.configuration_utils", ConfigMixin=ConfigMixin, register_to_config=register_to_config)
    stub("diffusers.utils", deprecate=lambda *a, **k: None, is_scipy_available=lambda: False)
    stub(
        "diffusers.schedulers.scheduling_utils",
        KarrasDiffusionSchedulers=[],
        SchedulerMixin=SchedulerMixin,
        SchedulerOutput=SchedulerOutput,
    )
    return importlib.import_module("diffusers.schedulers.scheduling_unipc_multistep")


def read_safetensors(th, path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = {"F16": np.float16, "F32": np.float32}[info["dtype"]]
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dt).reshape(info["shape"]).astype(np.float32)
        out[name] = th.from_numpy(arr.copy())
    return out


def save(out, arrays, key, arr):
    arr = np.ascontiguousarray(arr)
    path = os.path.join(out, key + ".npy")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, arr)
    a = arr.astype(np.float64)
    arrays[key] = {
        "file": key + ".npy",
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "abs_max": float(np.abs(a).max()),
        "abs_sum": float(np.abs(a).sum()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kdiffusion", required=True)
    ap.add_argument("--diffusers", required=True)
    ap.add_argument("--glide", required=True)
    ap.add_argument("--golden", required=True, help="the shared golden set (weights, manifest, glide_cfg tokens)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--state", choices=["float32", "float64"], default="float32", help="k-diffusion's x and D")
    ap.add_argument(
        "--perturb",
        type=float,
        default=0.0,
        help="multiply every ε by 1 + δ·N(0, 1) (a sensitivity run: δ = the port's single-forward accuracy)",
    )
    ap.add_argument(
        "--perturb-seed",
        type=int,
        nargs="+",
        default=[SEED + 1],
        help="the perturbation's generator seed; several seeds run one after another in one process (batch 1 each, "
        "as a single-seed run: a batch of 16 rows moved these trajectories by up to 1.4e-4 itself), into --out/seed-S/",
    )
    ap.add_argument(
        "--add-eps-error",
        metavar="DIR",
        help="add DIR/<case>_deps.npy[i] (the port's ε minus the recorded ε at the fixture's call i, written by "
        "tools/golden/kdiffusion_port_eps.ts) to the reference's ε at its call i: the port's own forward errors, "
        "in place of i.i.d. noise",
    )
    ap.add_argument(
        "--spread-kind",
        choices=["threads", "perturb", "config"],
        default="threads",
        help="where --compare files the spread: meta.kdiffusion.spread (threads), perturb_spread (per seed) or "
        "config_spread (per CPU configuration, --config-label)",
    )
    ap.add_argument(
        "--config-label",
        help="with --spread-kind config: the run's CPU configuration as kdiffusion_config_spread.sh names it",
    )
    ap.add_argument("--spread-only", action="store_true", help="--out is an earlier run: only compare it (--compare)")
    ap.add_argument("--cases", nargs="*", help="only these case keys (a spread run on a subset)")
    ap.add_argument("--compare", help="another output of this script: print the largest relative difference per case")
    args = ap.parse_args()
    seeds = args.perturb_seed
    if len(seeds) > 1 and not args.perturb:
        raise SystemExit("--perturb-seed: several seeds need --perturb δ")
    if args.spread_only:
        return write_spreads(args, args.out, args.compare)

    import torch as th

    th.set_num_threads(args.threads)
    install_stubs()
    sys.path.insert(0, args.glide)
    from glide_text2im.gaussian_diffusion import get_named_beta_schedule
    from glide_text2im.model_creation import create_model_and_diffusion

    sampling, external = load_kdiffusion(args.kdiffusion)
    if args.state == "float32":
        # Over float64 σs k-diffusion promotes x to float64 through append_dims (σ as a [B,1,1,1] float64 tensor). Cast
        # there, x and D stay float32 while every scalar (σ ratios, σ_down, σ_mid, h, φ) stays float64: the port's
        # regime. At GLIDE's σ_max ≈ 2·10⁴ a float64 x would be ~1e-3 from any float32 one, which Heun's first step
        # multiplies by σ_0/σ_1 ≈ 3500; and with float32 σs the reference's own scalars are off (σ_down of the
        # ancestral step cancels catastrophically, σ_mid of DPM-2 is amplified 60×).
        kutils = sys.modules["k_diffusion.utils"]
        append_dims = kutils.append_dims
        kutils.append_dims = lambda x, n: append_dims(x, n).float()
    unipc = load_unipc(args.diffusers)

    manifest = json.load(open(os.path.join(args.golden, "manifest.json")))
    cfg = dict(manifest["meta"]["small_glide"])
    model, _ = create_model_and_diffusion(**cfg)
    model.load_state_dict(read_safetensors(th, os.path.join(args.golden, "weights", "glide_small.safetensors")))
    model.eval()
    T = cfg["diffusion_steps"]
    betas = get_named_beta_schedule(cfg["noise_schedule"], T)
    alphas_cumprod = np.cumprod(1.0 - betas)
    S = SIZE

    tokens_all = np.load(os.path.join(args.golden, "glide_cfg", "in_tokens.npy"))
    masks_all = np.load(os.path.join(args.golden, "glide_cfg", "in_mask.npy"))
    half = len(tokens_all) // 2
    # The first prompt, and the unconditional row of the same batch.
    tokens = th.tensor(np.stack([tokens_all[0], tokens_all[half]]), dtype=th.long)
    mask = th.tensor(np.stack([masks_all[0], masks_all[half]]).astype(bool))

    def eps_fn(guided):
        def fn(x, t):
            b = x.shape[0]
            ts = t.expand(b) if t.ndim == 0 else t
            if not guided:
                return model(x, ts, tokens=tokens[:1].expand(b, -1), mask=mask[:1].expand(b, -1))[:, :3]
            x2 = th.cat([x, x])
            out = model(x2, th.cat([ts, ts]), tokens=tokens.repeat_interleave(b, 0), mask=mask.repeat_interleave(b, 0))
            cond, uncond = out[:b, :3], out[b:, :3]
            return uncond + CFG_SCALE * (cond - uncond)

        return fn

    class EpsModel(th.nn.Module):
        """What DiscreteEpsDDPMDenoiser wraps: (x_t, t) → ε."""

        def __init__(self, guided):
            super().__init__()
            self.fn = eps_fn(guided)

        def forward(self, x, t):
            x = x.float()
            eps = self.fn(x, t)
            if args.perturb:
                eps = eps * (1 + args.perturb * th.randn(eps.shape, generator=perturb_gen))
            if args.add_eps_error:
                err = port_error(current["key"])
                i = len(rec["eps"])
                if i >= len(err):
                    raise SystemExit(f"{current['key']}: call {i}, but --add-eps-error has {len(err)} calls")
                eps = eps + th.from_numpy(err[i : i + 1])
            # Per call, what the network saw and said: its input x_t = c_in·x_σ, the (fractional) timestep, ε.
            rec["x_t"].append(x.numpy().copy())
            rec["t"].append(float(t.reshape(-1)[0]))
            rec["eps"].append(eps.numpy().copy())
            return eps

    rec = {}
    current = {}
    port_errors = {}

    def port_error(key):
        if key not in port_errors:
            port_errors[key] = np.load(os.path.join(args.add_eps_error, f"{key}_deps.npy")).astype(np.float32)
        return port_errors[key]

    def new_record():
        rec.clear()
        rec.update({"x_t": [], "t": [], "eps": [], "sigma": [], "D": [], "steps_x": []})

    def save_record(key, space):
        """The case's per-call inputs and outputs (the teacher-forced check replays D in call order) and per-step x."""
        n = len(rec["D"])
        if not (len(rec["x_t"]) == len(rec["t"]) == len(rec["eps"]) == len(rec["sigma"]) == n):
            raise RuntimeError(f"{key}: inconsistent call records")
        save(out, arrays, f"kdiffusion/calls/{key}_sigma", np.array(rec["sigma"], dtype=np.float64))
        save(out, arrays, f"kdiffusion/calls/{key}_t", np.array(rec["t"], dtype=np.float64))
        save(out, arrays, f"kdiffusion/calls/{key}_x_t", np.concatenate(rec["x_t"]).astype(np.float32))
        save(out, arrays, f"kdiffusion/calls/{key}_eps", np.concatenate(rec["eps"]).astype(np.float32))
        save(out, arrays, f"kdiffusion/calls/{key}_D", np.concatenate(rec["D"]).astype(np.float32))
        save(out, arrays, f"kdiffusion/steps/{key}_x", np.concatenate(rec["steps_x"]).astype(np.float32))
        return {"calls": n, "steps_x_space": space}

    for seed in seeds:
        # one seed's run, exactly as a process given only that seed: the generator restarts with the case list
        perturb_gen = th.Generator().manual_seed(seed)
        out = args.out if len(seeds) == 1 else os.path.join(args.out, f"seed-{seed}")
        gen = th.Generator().manual_seed(SEED)
        x_T = th.randn((1, 3, S, S), generator=gen)
        noise = th.randn((STEPS, 1, 3, S, S), generator=gen)
        arrays = {}
        save(out, arrays, "kdiffusion/x_T", x_T.numpy())
        save(out, arrays, "kdiffusion/noise_per_step", noise.numpy())
        save(out, arrays, "kdiffusion/tokens", tokens.numpy().astype(np.int64))
        save(out, arrays, "kdiffusion/mask", mask.numpy().astype(np.uint8))
        cases = []
        timings = {}
        for guided in (False, True):
            tag = "cfg" if guided else "cond"
            # float64 σ table and σs (exact scalar arithmetic: σ → t, σ_down, σ_mid, the step coefficients); the
            # tensors x and D float32 (see --state).
            den = external.DiscreteEpsDDPMDenoiser(EpsModel(guided), th.tensor(alphas_cumprod), quantize=False)

            def clamped(x, sigma, **kw):
                # D(x; σ) clamped to [-1, 1], as guided-diffusion's clip_denoised: with random weights the unclamped
                # D of a 20,000-σ start is ~1e4 and a relative tolerance on it would say nothing.
                d = den(x, sigma, **kw).clamp(-1, 1)
                rec["sigma"].append(float(sigma.reshape(-1)[0]))
                rec["D"].append(d.float().numpy().copy())
                return d
            for name in KD_SAMPLERS:
                for schedule in ["default"] + EXTRA_SCHEDULES.get(name, []):
                    if args.cases and f"{name}_{schedule}_{tag}" not in args.cases:
                        continue
                    if schedule == "default":
                        sigmas = den.get_sigmas(STEPS)
                    else:
                        # Built under float64 default dtype (their torch.linspace would be float32): a float32 σ list
                        # is ~1e-3 absolute off at σ ≈ 10⁴, which the next D = x − σ·ε carries into the samples.
                        build = sampling.get_sigmas_karras if schedule == "karras" else sampling.get_sigmas_exponential
                        th.set_default_dtype(th.float64)
                        try:
                            sigmas = build(STEPS, den.sigma_min.item(), den.sigma_max.item())
                        finally:
                            th.set_default_dtype(th.float32)
                    calls = {"i": 0}

                    def noise_sampler(sigma, sigma_next):
                        i = calls["i"]
                        calls["i"] += 1
                        return noise[i]

                    fn = getattr(sampling, f"sample_{name}")
                    kwargs = {"noise_sampler": noise_sampler} if "noise_sampler" in inspect.signature(fn).parameters else {}
                    current["key"] = f"{name}_{schedule}_{tag}"
                    new_record()
                    t0 = time.perf_counter()
                    with th.no_grad():
                        x = fn(
                            clamped,
                            x_T * sigmas[0],
                            sigmas,
                            disable=True,
                            callback=lambda info: rec["steps_x"].append(info["x"].float().numpy().copy()),
                            **kwargs,
                        )
                    key = f"{name}_{schedule}_{tag}"
                    timings[key] = time.perf_counter() - t0
                    save(out, arrays, f"kdiffusion/{key}", x.float().numpy())
                    info = save_record(key, "sigma")
                    cases.append({"key": key, "sampler": name, "schedule": schedule, "guidance": tag, **info})
            # thresholding with sample_max_value 1 is the clamp of x0 to [-1, 1] (its quantile scale is clamped to 1).
            if args.cases and f"unipc_default_{tag}" not in args.cases:
                continue
            sched = unipc.UniPCMultistepScheduler(
                num_train_timesteps=T, trained_betas=betas, prediction_type="epsilon", thresholding=True, sample_max_value=1.0
            )
            sched.set_timesteps(STEPS)
            fn = EpsModel(guided)
            convert = sched.convert_model_output

            def recorded_convert(model_output, *a, **kw):
                # UniPC's data prediction x0 after thresholding (= the clamp): the D of a σ-space port at this call.
                x0 = convert(model_output, *a, **kw)
                # diffusers' own σ of this step (from its float32 ᾱ table; the port's table is float64)
                rec["sigma"].append(float(sched.sigmas[sched.step_index]))
                rec["D"].append(x0.float().numpy().copy())
                return x0

            sched.convert_model_output = recorded_convert
            current["key"] = f"unipc_default_{tag}"
            new_record()
            x = x_T.clone()
            t0 = time.perf_counter()
            with th.no_grad():
                for t in sched.timesteps:
                    rec["steps_x"].append(x.float().numpy().copy())
                    x = sched.step(fn(x, t.reshape(1)), t, x).prev_sample
            key = f"unipc_default_{tag}"
            timings[key] = time.perf_counter() - t0
            save(out, arrays, f"kdiffusion/{key}", x.float().numpy())
            # diffusers steps VP x_t: its per-step x is the scheduler's sample (x_σ = x_t·sqrt(1 + σ²)).
            info = save_record(key, "vp")
            cases.append({"key": key, "sampler": "unipc", "schedule": "default", "guidance": tag, **info})

        meta = {
            "small_glide": cfg,
            "kdiffusion": {
                "steps": STEPS,
                "size": SIZE,
                "cfg_scale": CFG_SCALE,
                "seed": SEED,
                "cases": cases,
                "prompt": "glide_cfg/in_tokens row 0 (conditional) and its unconditional row, from the shared golden set",
                "denoiser": "k_diffusion.external.DiscreteEpsDDPMDenoiser(quantize=False) over float64 alphas_cumprod; samplers' sigmas float32",
                "unipc": "diffusers UniPCMultistepScheduler defaults (bh2, order 2, linspace), trained_betas = GLIDE's",
                "clip_denoised": True,
                "state": args.state,
                "threads": args.threads,
                # the dispatch overrides that make this CPU compute like another one (kdiffusion_config_spread.sh)
                "cpu_env": {k: os.environ[k] for k in CPU_ENV if k in os.environ},
                "torch": th.__version__,
                "platform": platform.platform(),
                "timings_s": timings,
                **({"perturb": args.perturb, "perturb_seed": seed} if args.perturb else {}),
                **({"add_eps_error": args.add_eps_error} if args.add_eps_error else {}),
            },
        }
        json.dump({"meta": meta, "arrays": arrays}, open(os.path.join(out, "manifest.json"), "w"), indent=1)
        if len(seeds) > 1:
            print(f"seed {seed} done", flush=True)
    if args.compare:
        write_spreads(args, args.out, args.compare)


def write_spreads(args, out, compare):
    """write_spread of a single-seed run, or of each seed-S/ folder of a several-seed one."""
    seeds = args.perturb_seed
    if len(seeds) == 1:
        return write_spread(args, out, compare, seeds[0])
    for s in seeds:
        if os.path.isdir(os.path.join(out, f"seed-{s}")):
            print(f"seed {s}")
            write_spread(args, os.path.join(out, f"seed-{s}"), compare, s)


def write_spread(args, out, compare, seed):
    """The reference's own spread: the cases of run `out` (possibly interrupted, or a --cases subset) against run
    `compare`, relative to the latter's max |value|, written into `compare`'s manifest where the verifier takes its
    tolerances: meta.kdiffusion.spread (another torch thread setting) or meta.kdiffusion.perturb_spread[case], one
    entry per seed (ε multiplied by 1 + δ·N(0, 1), δ the port's measured single-forward accuracy, RMS(Δε)/RMS(ε))."""
    path = os.path.join(compare, "manifest.json")
    other = json.load(open(path))
    kd = other["meta"]["kdiffusion"]
    if args.spread_kind == "threads":
        spread = kd.setdefault("spread", {})
        kd["spread_from"] = f"torch threads {args.threads} vs {kd['threads']}"
    elif args.spread_kind == "perturb" and not args.perturb:
        raise SystemExit("--spread-kind perturb needs the run's --perturb δ")
    elif args.spread_kind == "config" and not args.config_label:
        raise SystemExit("--spread-kind config needs the run's --config-label")
    else:
        spread = {}
    for c in kd["cases"]:
        mine = os.path.join(out, "kdiffusion", c["key"] + ".npy")
        if not os.path.exists(mine):
            continue
        a = np.load(mine).astype(np.float64)
        b = np.load(os.path.join(compare, "kdiffusion", c["key"] + ".npy")).astype(np.float64)
        spread[c["key"]] = float(np.abs(a - b).max() / np.abs(b).max())
        print(f"{c['key']:36s} max|Δ|/max|ref| = {spread[c['key']]:.3e}")
    if args.spread_kind == "perturb":
        # one entry per (case, seed): a later run with the same seed and δ replaces its own entry
        per = kd.setdefault("perturb_spread", {})
        for key, v in spread.items():
            runs = [r for r in per.get(key, []) if (r["seed"], r["delta"]) != (seed, args.perturb)]
            per[key] = runs + [{"delta": args.perturb, "seed": seed, "spread": v}]
    if args.spread_kind == "config":
        # one entry per (case, configuration): a later run of the same configuration replaces its own entry
        per = kd.setdefault("config_spread", {})
        for key, v in spread.items():
            runs = [r for r in per.get(key, []) if r["config"] != args.config_label]
            per[key] = runs + [{"config": args.config_label, "spread": v}]
    json.dump(other, open(path, "w"), indent=1)

if __name__ == "__main__":
    main()

"""Reference outputs of diffusers' guiders for the prediction-combining strategies (test/fixtures/guiders/).

Runs the guiders' own `forward` (CFG-Zero*, TCFG, MAMBO-G, FDG with kornia's Laplacian pyramid, APG-mix) on fixed
random predictions and writes inputs and outputs as float32 .npy files in NHWC order (the order of this
repository's tensors; the guiders see NCHW). `test/guiders.test.ts` compares the strategies' combine functions
with them.

Glue only: the guider and pyramid sources are read at generation time from the git checkouts the user names
(`fetch` mirrors of huggingface/diffusers and kornia/kornia, no work tree needed) into a temporary directory, with
small stand-ins for the package plumbing they import (config registration, logging, hub mixins) so that neither
package has to be installed; the project never contains their code. Their commits go into manifest.json.

Usage: /usr/bin/python3 tools/strategies/make_guider_refs.py --diffusers GIT_DIR --kornia GIT_DIR \
           [--out test/fixtures/guiders]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

GUIDERS = [
    "guider_utils",
    "classifier_free_zero_star_guidance",
    "tangential_classifier_free_guidance",
    "magnitude_aware_guidance",
    "frequency_decoupled_guidance",
    "adaptive_projected_guidance_mix",
    "perturbed_attention_guidance",
    "smoothed_energy_guidance",
    "skip_layer_guidance",
]
KORNIA = [
    "kornia/core/check.py",
    "kornia/core/exceptions.py",
    "kornia/core/_compat.py",
    "kornia/filters/filter.py",
    "kornia/filters/kernels.py",
    "kornia/geometry/transform/pyramid.py",
]

# Stand-ins for the plumbing the sources import; none of it takes part in the arithmetic.
STUBS = {
    "diffusers/__init__.py": "",
    "diffusers/configuration_utils.py": (
        "def register_to_config(f):\n    return f\n\nclass ConfigMixin:\n    pass\n"
    ),
    "diffusers/utils/__init__.py": (
        "import logging\n\n"
        "def is_kornia_available():\n    return True\n\n"
        "class BaseOutput:\n    def __init__(self, **fields):\n        self.__dict__.update(fields)\n\n"
        "class PushToHubMixin:\n    pass\n\n"
        "def get_logger(name):\n    return logging.getLogger(name)\n"
    ),
    "diffusers/guiders/__init__.py": "",
    # The perturbed-model guiders import their model hooks; only their combination (`forward`) runs here.
    "diffusers/hooks/__init__.py": (
        "class HookRegistry:\n    pass\n\n"
        "class LayerSkipConfig:\n    skip_attention = True\n    skip_attention_scores = False\n    skip_ff = True\n\n"
        "    def __init__(self, *args, **fields):\n        self.__dict__.update(fields)\n"
    ),
    "diffusers/hooks/layer_skip.py": "def _apply_layer_skip_hook(*args, **kwargs):\n    raise NotImplementedError\n",
    "diffusers/hooks/smoothed_energy_guidance_utils.py": (
        "class SmoothedEnergyGuidanceConfig:\n    def __init__(self, *args, **fields):\n        self.__dict__.update(fields)\n\n"
        "def _apply_smoothed_energy_guidance_hook(*args, **kwargs):\n    raise NotImplementedError\n"
    ),
    "huggingface_hub/__init__.py": "",
    "huggingface_hub/utils/__init__.py": "def validate_hf_hub_args(f):\n    return f\n",
    "kornia/__init__.py": "",
    "kornia/core/__init__.py": "",
    "kornia/filters/__init__.py": "from .filter import filter2d\n\ngaussian_blur2d = None\n",
    "kornia/geometry/__init__.py": "from .transform.pyramid import pyrup\n",
    "kornia/geometry/transform/__init__.py": "from .pyramid import build_laplacian_pyramid\n",
}


def git_show(git_dir, path):
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def git_head(git_dir):
    return subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def materialise(root, diffusers_git, kornia_git):
    files = dict(STUBS)
    for name in GUIDERS:
        files[f"diffusers/guiders/{name}.py"] = git_show(diffusers_git, f"src/diffusers/guiders/{name}.py")
    for path in KORNIA:
        files[path] = git_show(kornia_git, path)
    for rel, text in files.items():
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    sys.path.insert(0, root)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--diffusers", required=True, help="git dir of a huggingface/diffusers checkout or mirror")
    p.add_argument("--kornia", required=True, help="git dir of a kornia/kornia checkout or mirror")
    p.add_argument("--out", default="test/fixtures/guiders")
    a = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="guider-refs-")
    materialise(tmp, a.diffusers, a.kornia)
    from diffusers.guiders.adaptive_projected_guidance_mix import AdaptiveProjectedMixGuidance, MomentumBuffer
    from diffusers.guiders.classifier_free_zero_star_guidance import ClassifierFreeZeroStarGuidance
    from diffusers.guiders.frequency_decoupled_guidance import FrequencyDecoupledGuidance
    from diffusers.guiders.magnitude_aware_guidance import MagnitudeAwareGuidance
    from diffusers.guiders.tangential_classifier_free_guidance import TangentialClassifierFreeGuidance
    from diffusers.guiders.perturbed_attention_guidance import PerturbedAttentionGuidance
    from diffusers.guiders.skip_layer_guidance import SkipLayerGuidance
    from diffusers.guiders.smoothed_energy_guidance import SmoothedEnergyGuidance
    from kornia.geometry.transform import build_laplacian_pyramid

    os.makedirs(a.out, exist_ok=True)
    arrays = {}

    def nhwc(t):
        return t.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)

    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    # Predictions that look like a real pair: u random, c = u plus a smaller, partly correlated difference.
    rng = np.random.RandomState(22)
    shape = (2, 16, 16, 3)
    u = rng.standard_normal(shape).astype(np.float32)
    c = (0.9 * u + 0.4 * rng.standard_normal(shape)).astype(np.float32)
    arrays["cond"], arrays["uncond"] = c, u
    tc, tu = nchw(c), nchw(u)

    def run(guider, step, n_steps, pc=tc, pu=tu):
        guider.set_state(step, n_steps, torch.tensor(0))
        return guider.forward(pc, pu).pred

    arrays["cfg_zero_star_s3"] = nhwc(run(ClassifierFreeZeroStarGuidance(guidance_scale=3.0, zero_init_steps=1), 1, 10))
    arrays["tcfg_s3"] = nhwc(run(TangentialClassifierFreeGuidance(guidance_scale=3.0), 0, 10))
    # torch 1.13's torch.norm refuses a 3-dimension `dim`; MAMBO-G's norms run over all non-batch dimensions and
    # the rest is elementwise, so the guider sees the predictions flattened to [B, N] (the same arithmetic).
    for alpha in (8.0, 1.0):
        flat = run(MagnitudeAwareGuidance(guidance_scale=5.0, alpha=alpha), 0, 10, tc.flatten(1), tu.flatten(1))
        arrays[f"mambo_g_s5_a{alpha:g}"] = nhwc(flat.reshape(tc.shape))
    arrays["fdg_5_2"] = nhwc(run(FrequencyDecoupledGuidance(guidance_scales=[5.0, 2.0]), 0, 10))
    arrays["fdg_6_3_1p5_pw"] = nhwc(
        run(FrequencyDecoupledGuidance(guidance_scales=[6.0, 3.0, 1.5], parallel_weights=[0.5, 1.0, 0.2]), 0, 10)
    )
    # Not covered: a level at scale 1. The guider then appends `pred_cond_freq`, which at this commit is only bound
    # inside the other branch (UnboundLocalError for level 0, the previous level's band otherwise).
    for i, level in enumerate(build_laplacian_pyramid(tc, 3)):
        arrays[f"pyramid3_cond_level{i}"] = nhwc(level)

    # The perturbed-model guides' combination: a third prediction c_p (the perturbed network's), both terms on.
    cp = (c - 0.3 * rng.standard_normal(shape)).astype(np.float32)
    arrays["cond_perturbed"] = cp
    tcp = nchw(cp)

    def run3(guider):
        # Step 1: the PAG and SLG guiders' range test is strict at its start (start_step < step), so step 0 is off.
        guider.set_state(1, 10, torch.tensor(0))
        return nhwc(guider.forward(tc, tu, tcp).pred)

    whole = dict(start=0.0, stop=1.0)
    arrays["pag_s3_w2p5"] = run3(
        PerturbedAttentionGuidance(
            guidance_scale=3.0,
            perturbed_guidance_scale=2.5,
            perturbed_guidance_layers=[0],
            perturbed_guidance_start=0.0,
            perturbed_guidance_stop=1.0,
            **whole,
        )
    )
    arrays["seg_s3_w2"] = run3(
        SmoothedEnergyGuidance(guidance_scale=3.0, seg_guidance_scale=2.0, seg_guidance_layers=[0], **whole)
    )
    arrays["slg_s4_w2p8"] = run3(
        SkipLayerGuidance(
            guidance_scale=4.0,
            skip_layer_guidance_scale=2.8,
            skip_layer_guidance_layers=[0],
            skip_layer_guidance_start=0.0,
            skip_layer_guidance_stop=1.0,
            **whole,
        )
    )

    # APG-mix over four steps of x0 predictions: cfg at k <= 1, apg after; GLIDE's s = guidance_scale + 1 under
    # the original formulation.
    steps = 4
    xs_c = (0.9 * rng.standard_normal((steps,) + shape)).astype(np.float32)
    xs_u = (xs_c + 0.3 * rng.standard_normal((steps,) + shape)).astype(np.float32)
    arrays["apg_mix_cond"], arrays["apg_mix_uncond"] = xs_c, xs_u
    mix = dict(scale=3.0, apgScale=6.0, apgStartStep=1, eta=0.25, normThreshold=12.0, momentum=-0.5)
    g = AdaptiveProjectedMixGuidance(
        guidance_scale=mix["scale"] - 1,
        adaptive_projected_guidance_scale=mix["apgScale"] - 1,
        adaptive_projected_guidance_momentum=mix["momentum"],
        adaptive_projected_guidance_rescale=mix["normThreshold"],
        eta=mix["eta"],
        adaptive_projected_guidance_start_step=mix["apgStartStep"],
        use_original_formulation=True,
    )
    # prepare_inputs makes the buffer at step 0 in a pipeline; the forward alone needs it made here.
    g.momentum_buffer = MomentumBuffer(mix["momentum"])
    arrays["apg_mix_out"] = np.stack(
        [nhwc(run(g, k, steps, nchw(xs_c[k]), nchw(xs_u[k]))) for k in range(steps)]
    )

    manifest = {
        "generator": "tools/strategies/make_guider_refs.py",
        "diffusers_commit": git_head(a.diffusers),
        "kornia_commit": git_head(a.kornia),
        "torch": torch.__version__,
        "layout": "NHWC float32",
        "cases": {
            "cfg_zero_star_s3": "ClassifierFreeZeroStarGuidance(guidance_scale=3, zero_init_steps=1) at step 1 of 10",
            "tcfg_s3": "TangentialClassifierFreeGuidance(guidance_scale=3)",
            "mambo_g_s5_a8": "MagnitudeAwareGuidance(guidance_scale=5, alpha=8)",
            "mambo_g_s5_a1": "MagnitudeAwareGuidance(guidance_scale=5, alpha=1)",
            "fdg_5_2": "FrequencyDecoupledGuidance(guidance_scales=[5, 2])",
            "fdg_6_3_1p5_pw": "FrequencyDecoupledGuidance(guidance_scales=[6, 3, 1.5], parallel_weights=[0.5, 1, 0.2])",
            "pyramid3_cond_level*": "kornia build_laplacian_pyramid(cond, 3)",
            "pag_s3_w2p5": "PerturbedAttentionGuidance(guidance_scale=3, perturbed_guidance_scale=2.5) on cond, uncond, cond_perturbed",
            "seg_s3_w2": "SmoothedEnergyGuidance(guidance_scale=3, seg_guidance_scale=2) on cond, uncond, cond_perturbed",
            "slg_s4_w2p8": "SkipLayerGuidance(guidance_scale=4, skip_layer_guidance_scale=2.8) on cond, uncond, cond_perturbed",
            "apg_mix_out": "AdaptiveProjectedMixGuidance, original formulation, steps 0-3; params in apg_mix_params",
        },
        "apg_mix_params": mix,
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
    }
    for k, v in arrays.items():
        np.save(os.path.join(a.out, f"{k}.npy"), v)
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {len(arrays)} arrays to {a.out}")


if __name__ == "__main__":
    main()

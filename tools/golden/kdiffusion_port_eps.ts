// The port's per-call forward error on the k-diffusion golden trajectories, for a reference run that carries exactly
// those errors instead of i.i.d. noise: our GLIDE-small (TensorFlow.js, as verify-reference) at every recorded
// network input of the fixture, minus the recorded ε, written as <out>/<case>_deps.npy (call-major NCHW, the shape of
// calls/<case>_eps.npy). Then kdiffusion_golden.py --add-eps-error <out> adds call i's error to the reference's ε
// at its call i. Usage:
//   npx tsx tools/golden/kdiffusion_port_eps.ts <golden dir> <out dir> [case keys...]
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { initEngine } from "../../src/core/engine.ts";
import { writeNpy } from "../../src/core/npy.ts";
import { loadManifest, SectionContext } from "../../src/verify/common.ts";
import { portEpsError } from "../../src/verify/sections/kdiffusion.ts";

const [golden, out, ...keys] = process.argv.slice(2);
if (!golden || !out) {
  process.stderr.write("usage: kdiffusion_port_eps.ts <golden dir> <out dir> [case keys...]\n");
  process.exit(2);
}
await initEngine("auto", { quiet: true });
const { manifest, error } = loadManifest(golden);
if (!manifest) throw new Error(`${golden}/manifest.json: ${error}`);
mkdirSync(out, { recursive: true });
for (const [key, { delta, shape }] of portEpsError(new SectionContext(golden, "kdiffusion", manifest, error), keys)) {
  writeNpy(join(out, `${key}_deps.npy`), delta, shape);
  let d2 = 0;
  for (const v of delta) d2 += v * v;
  process.stdout.write(`${key}: ${shape[0]} calls, RMS(Δε) ${Math.sqrt(d2 / delta.length).toExponential(2)}\n`);
}

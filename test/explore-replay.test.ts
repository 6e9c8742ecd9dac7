// The explorer's replay driver (src/explore/replay.ts) against the synchronous loop: the same strategies and
// reverse loop over a model answered asynchronously must give bitwise the samples of the same model answered
// synchronously, make each forward once, and leave no tensor behind.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { createDiffusion } from "../src/core/diffusion.ts";
import { backendFromEnv, initEngine, tf } from "../src/core/engine.ts";
import { seededNoise } from "../src/core/samplers.ts";
import { bundleExplorer } from "../src/explore/build.ts";
import { type ForwardRequest, Replay, splitChannels } from "../src/explore/replay.ts";
import { sampleGuided, seededXT } from "../src/pipelines/sampling.ts";
import { buildStrategy } from "../src/strategies/registry.ts";
import type { GuidanceModels, ModelFn } from "../src/strategies/strategy.ts";
import { encodeWorld } from "../src/zoo/zoo-models.ts";

const S = 8;
const OC = 6;

/** A deterministic stand-in denoiser on host arrays: depends on x, t, the tokens and which model it is. */
function fakeRaw(
  x: Float32Array,
  t: Float32Array,
  tokens: Int32Array,
  ctx: number,
  weak: boolean,
): Float32Array {
  const b = t.length;
  const per = S * S;
  const out = new Float32Array(b * per * OC);
  for (let r = 0; r < b; r++) {
    let tok = 0;
    for (let i = 0; i < ctx; i++) tok += tokens[r * ctx + i]! * (i + 1);
    for (let p = 0; p < per; p++) {
      for (let c = 0; c < OC; c++) {
        const xi = x[(r * per + p) * 3 + (c % 3)]!;
        out[(r * per + p) * OC + c] =
          c < 3
            ? Math.tanh(xi) * (weak ? 0.4 : 0.5) + Math.sin(tok + t[r]! / 100 + c) * 0.1
            : Math.cos(xi + tok) * 0.3;
      }
    }
  }
  return out;
}

const syncModel =
  (weak: boolean): ModelFn =>
  (x, t, cond) =>
    splitChannels(
      fakeRaw(
        x.dataSync() as Float32Array,
        Float32Array.from(t.dataSync()),
        Int32Array.from(cond.tokens!.dataSync()),
        cond.tokens!.shape[1]!,
        weak,
      ),
      [x.shape[0], S, S],
      3,
      OC,
    );

const asyncForward = async (r: ForwardRequest) => fakeRaw(r.x, r.t, r.tokens, r.ctx, r.model === "weak");

before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});

describe("explorer replay driver", () => {
  for (const [strategy, sampler] of [
    [{ kind: "cfg", scale: 3 }, "ddpm"],
    [{ kind: "apg", scale: 3, eta: 0, normThreshold: 0, momentum: -0.5 }, "ddpm"],
    [{ kind: "autoguidance", scale: 2 }, "ddim"],
  ] as const) {
    it(`${strategy.kind} (${sampler}): bitwise the synchronous loop, each forward once, no leak`, async () => {
      const steps = 5;
      const diffusion = createDiffusion({
        schedule: "squaredcos_cap_v2",
        steps: 1000,
        respacing: sampler === "ddim" ? `ddim${steps}` : String(steps),
        modelVarType: "learned_range",
      });
      const prompts = ["a red circle", "a blue square"];
      const bag = (model: ModelFn, weak: ModelFn): GuidanceModels => ({
        model,
        weak,
        encode: (p) => encodeWorld(p, 16),
        diffusion,
      });
      const run = (models: GuidanceModels) => {
        const g = buildStrategy(strategy, models).bind(prompts);
        return {
          g,
          body: () =>
            tf.tidy(
              () => sampleGuided(diffusion, g, seededXT(3, 2, S), { sampler, noise: seededNoise(3) }).sample,
            ),
        };
      };
      const direct = run(bag(syncModel(false), syncModel(true)));
      const want = direct.body();
      const wantData = want.dataSync().slice();
      want.dispose();
      direct.g.dispose();

      const before = tf.memory().numTensors;
      const replay = new Replay();
      const viaReplay = run(bag(replay.model("denoiser", 3, OC), replay.model("weak", 3, OC)));
      const got = await replay.run(viaReplay.body, asyncForward);
      assert.deepEqual(got.dataSync(), wantData, "bitwise the synchronous loop's samples");
      got.dispose();
      viaReplay.g.dispose();
      assert.equal(tf.memory().numTensors, before, "no tensor left behind by suspended runs");
      const perStep = strategy.kind === "autoguidance" ? 2 : 1;
      assert.equal(replay.stats.forwards, steps * perStep, "each forward computed once");
      assert.equal(replay.stats.runs, steps * perStep + 1, "one run per forward, plus the one that finishes");
    });
  }
});

describe("explorer bundle", () => {
  it("builds for the browser: no Node-only module reaches the page's imports", {
    timeout: 60_000,
  }, async () => {
    const js = await bundleExplorer();
    assert.ok(js.length > 100_000, `a bundle of ${js.length} bytes`);
  });
});

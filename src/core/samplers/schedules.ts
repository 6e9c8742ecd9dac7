// Timestep and σ selection from a step count: diffusers' timestep spacings and k-diffusion's σ schedules. Pure
// number arithmetic in float64; the samplers cast to float32 when a value meets a tensor.

/** numpy's round(): half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** numpy.linspace(a, b, n) with the last value pinned to b. */
export function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  const step = (b - a) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? b : a + i * step));
}

export type Spacing = "leading" | "trailing" | "linspace";

/**
 * Integer timesteps, descending, of diffusers' spacings (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
 * Steps are Flawed", Table 2), as DDIMScheduler / EulerDiscreteScheduler form them with steps_offset 0:
 * linspace = round(linspace(0, T−1, N)), leading = i·⌊T/N⌋, trailing = round(arange(T, 0, −T/N)) − 1.
 * `plusOne` is the multistep schedulers' variant (UniPC, DPM-Solver++): N+1 points with the last dropped for
 * linspace and leading (⌊T/(N+1)⌋).
 */
export function spacedTimesteps(spacing: Spacing, N: number, T: number, plusOne = false): number[] {
  if (!Number.isInteger(N) || N < 1 || N > T) throw new Error(`steps: expected 1..${T}, got ${N}`);
  if (spacing === "linspace") {
    if (plusOne)
      return linspace(0, T - 1, N + 1)
        .map(roundHalfEven)
        .reverse()
        .slice(0, N);
    return linspace(0, T - 1, N)
      .map(roundHalfEven)
      .reverse();
  }
  if (spacing === "leading") {
    const ratio = Math.floor(T / (plusOne ? N + 1 : N));
    const n = plusOne ? N + 1 : N;
    const ts = Array.from({ length: n }, (_, i) => i * ratio).reverse();
    return plusOne ? ts.slice(0, N) : ts;
  }
  const ratio = T / N;
  const ts: number[] = [];
  for (let v = T; v > 0 && ts.length < N; v -= ratio) ts.push(roundHalfEven(v) - 1);
  return ts;
}

/** Karras et al. 2022 ("Elucidating the Design Space…") eq. 5: σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then 0. */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): number[] {
  const lo = sigmaMin ** (1 / rho);
  const hi = sigmaMax ** (1 / rho);
  return [...linspace(0, 1, n).map((r) => (hi + r * (lo - hi)) ** rho), 0];
}

/** k-diffusion's get_sigmas_exponential: σ even in log σ from σ_max to σ_min, then 0. */
export function exponentialSigmas(n: number, sigmaMin: number, sigmaMax: number): number[] {
  return [...linspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp), 0];
}

/** Every schedule a σ-space sampler accepts. */
export const SIGMA_SCHEDULES = [
  "default",
  "karras",
  "exponential",
  "leading",
  "trailing",
  "linspace",
] as const;

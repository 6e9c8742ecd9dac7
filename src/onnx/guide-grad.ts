// Guidance gradients on ONNX Runtime: ∇ₓ of a guidance objective (a scalar function of x and of data inputs: the
// noised classifier's Σ log p(y|x_t, t), the noised CLIP's exp(τ)·Σ⟨z_i(x_t, t), z_t⟩, or any strategy's own)
// differentiated by TensorFlow.js once per input shapes and replayed as an ONNX graph (src/onnx/traced.ts), so
// every data input is a graph input and the result equals TensorFlow.js's to float rounding.
import { type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { OnnxTraced, type TensorFn, type TracedOptions } from "./traced.ts";

/** A scalar objective of x [B, H, W, C] and named data inputs; must not dispose its arguments. */
export type GuideObjective = (x: Tensor4D, inputs: Readonly<Record<string, Tensor>>) => Tensor;

/** ∇ₓ objective as a function of named tensors ("x" and the objective's own inputs). */
export function gradientOf(objective: GuideObjective): TensorFn {
  return ({ x, ...rest }) => {
    if (!x) throw new Error("guidance gradient: no input 'x'");
    return tf.grad((xv) => objective(xv as Tensor4D, rest))(x);
  };
}

/** ∇ₓ of one objective on ONNX Runtime (one traced graph per input shapes). */
export class OnnxGuideGrad {
  private readonly fn: OnnxTraced;

  constructor(name: string, objective: GuideObjective, opts: TracedOptions = {}) {
    this.fn = new OnnxTraced(`${name} guidance gradient`, gradientOf(objective), opts);
  }

  /** Graphs traced so far (see OnnxTraced.traced). */
  get traced(): OnnxTraced["traced"] {
    return this.fn.traced;
  }

  /** ∇ₓ objective(x, inputs), NHWC like x. */
  grad(x: Tensor4D, inputs: Record<string, Tensor>): Tensor4D {
    if ("x" in inputs)
      throw new Error(`${this.fn.name}: a data input may not be called 'x' (the image's name)`);
    return this.fn.run({ x, ...inputs }) as Tensor4D;
  }

  dispose(): void {
    this.fn.dispose();
  }
}

/**
 * A conditioned guidance gradient cond → scale·∇ₓ objective(x, t, cond) on ONNX Runtime, with the condGrad
 * signature of the strategies' NoisedClassifier (cond = labels) and NoisedClip (cond = text embeddings). The scale
 * multiplies outside the graph, as the TensorFlow.js condGrad does, so a scale change never retraces.
 */
export function onnxCondGrad<C extends Tensor1D | Tensor2D>(
  name: string,
  objective: (x: Tensor4D, t: Tensor1D, cond: C) => Tensor,
  opts: TracedOptions = {},
): {
  condGrad(x: Tensor4D, t: Tensor1D, cond: C, scale: number): Tensor4D;
  engine: OnnxGuideGrad;
  dispose(): void;
} {
  const engine = new OnnxGuideGrad(
    name,
    (x, inputs) => objective(x, inputs.t as Tensor1D, inputs.cond as C),
    opts,
  );
  return {
    engine,
    condGrad: (x, t, cond, scale) =>
      tf.tidy(() => {
        const g = engine.grad(x, { t, cond });
        return tf.mul(g, scale) as Tensor4D;
      }),
    dispose: () => engine.dispose(),
  };
}

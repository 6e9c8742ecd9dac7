// The metrics' model forwards on ONNX Runtime: the evaluation CLIP's embeddings, the noised CLIP read at t = 0 and
// the noised classifier's logits at t = 0 (Inception score), each traced from its TensorFlow.js forward
// (src/onnx/traced.ts) so that no model needs an exporter of its own. The wrappers have the models' own method
// shapes, so src/metrics/embedders.ts takes either; all of them share one ONNX Runtime worker.
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from "../core/engine.ts";
import type { Runtime } from "./choice.ts";
import { OnnxSessions } from "./runtime.ts";
import { OnnxTraced, type TensorFn } from "./traced.ts";

export interface EvalClipForward {
  embedImage(x: Tensor4D): Tensor2D;
  embedText(tokens: Tensor2D, mask: Tensor2D): Tensor2D;
}
export interface ImageTimeEmbedder {
  embedImage(x: Tensor4D, t: Tensor1D): Tensor2D;
}
export interface ClassifierForward {
  logits(x: Tensor4D, t: Tensor1D): Tensor2D;
}

/**
 * Wraps metric models for a runtime: on TensorFlow.js each model is returned as is. A model wrapped twice gets the
 * same wrapper (its graphs are traced once): the guide scores read the metrics' noised CLIP and classifier.
 */
export interface MetricModels {
  evalClip<M extends EvalClipForward>(m: M): EvalClipForward;
  noisedClip<M extends ImageTimeEmbedder>(m: M): ImageTimeEmbedder;
  classifier<M extends ClassifierForward>(m: M): ClassifierForward;
  dispose(): void;
}

export function metricModelsOn(runtime: Runtime): MetricModels {
  if (runtime === "tfjs")
    return { evalClip: (m) => m, noisedClip: (m) => m, classifier: (m) => m, dispose: () => {} };
  let host: OnnxSessions | undefined;
  const traced: OnnxTraced[] = [];
  // One worker for all metric forwards, started by the first of them to run.
  const fn = (name: string, f: TensorFn) => {
    let t: OnnxTraced | undefined;
    return (inputs: Record<string, Tensor>): Tensor => {
      if (!t) {
        host ??= new OnnxSessions();
        t = new OnnxTraced(name, f, { sessions: host, fallback: true });
        traced.push(t);
      }
      return t.run(inputs);
    };
  };
  // One wrapper per (kind, model).
  const memo = new Map<string, WeakMap<object, unknown>>();
  const once = <M extends object, W>(kind: string, m: M, make: (m: M) => W): W => {
    const byModel = memo.get(kind) ?? new WeakMap<object, unknown>();
    memo.set(kind, byModel);
    if (!byModel.has(m)) byModel.set(m, make(m));
    return byModel.get(m) as W;
  };
  const wrappers = {
    evalClip: (m: EvalClipForward): EvalClipForward => {
      const image = fn("evaluation CLIP image embedding", ({ x }) => m.embedImage(x as Tensor4D));
      const text = fn("evaluation CLIP text embedding", ({ tokens, mask }) =>
        m.embedText(tokens as Tensor2D, mask as Tensor2D),
      );
      return {
        embedImage: (x) => image({ x }) as Tensor2D,
        embedText: (tokens, mask) => text({ tokens, mask }) as Tensor2D,
      };
    },
    noisedClip: (m: ImageTimeEmbedder): ImageTimeEmbedder => {
      const image = fn("noised CLIP image embedding", ({ x, t }) =>
        m.embedImage(x as Tensor4D, t as Tensor1D),
      );
      return { embedImage: (x, t) => image({ x, t }) as Tensor2D };
    },
    classifier: (m: ClassifierForward): ClassifierForward => {
      const logits = fn("noised classifier logits", ({ x, t }) => m.logits(x as Tensor4D, t as Tensor1D));
      return { logits: (x, t) => logits({ x, t }) as Tensor2D };
    },
  };
  return {
    evalClip: (m) => once("evalClip", m, wrappers.evalClip),
    noisedClip: (m) => once("noisedClip", m, wrappers.noisedClip),
    classifier: (m) => once("classifier", m, wrappers.classifier),
    dispose: () => {
      for (const t of traced) t.dispose();
      host?.dispose();
      host = undefined;
    },
  };
}

import { Module } from "../core/layers.ts";

/**
 * A named holder of sub-modules, so a model can mirror the official module tree (e.g. `in_layers.2` where the
 * official Sequential has parameter-free layers at the other indices) and load converted checkpoints by name.
 */
export class Container extends Module {
  add<M extends Module>(name: string, m: M): M {
    return this.child(name, m);
  }
}

// onnxruntime-web's entry points declare no types of their own beyond onnxruntime-common's API (the package's
// types.d.ts re-exports it the same way). Declared here too so that the type check does not depend on the browser
// runtime being installed in the node_modules it runs against.
declare module "onnxruntime-web/wasm" {
  export * from "onnxruntime-common";
}

/**
 * Zoo model names are folder names under the models folder, never paths: no separators, no `..`, nothing hidden.
 * A name like `../x` would otherwise read (and a provenance would record) a folder outside the zoo.
 * Kept free of Node imports: strategy schemas use it, and the explorer bundles the strategies for the browser.
 */
export const MODEL_NAME = /^[A-Za-z0-9_][A-Za-z0-9._+-]*$/;

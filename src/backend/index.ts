/** Picks a backend for the character LM by name. */
import { ConfigError } from '../errors.js';
import { JsCharLm } from './js/index.js';
import { NativeCharLm } from './native.js';
import type { CharLmBackend, CharLmShape } from './types.js';

/** Which implementation runs a model: 'native' (the Rust addon) or 'js' (the pure TypeScript reference). */
export type BackendName = 'native' | 'js';
/** Where the native backend computes: 'cpu', or a CUDA GPU ('cuda' is 'cuda:0') when the addon was built with CUDA. */
export type DeviceName = 'cpu' | 'cuda' | `cuda:${number}`;

export function createCharLmBackend(
  shape: CharLmShape,
  backend: BackendName = 'native',
  device: DeviceName = 'cpu',
): CharLmBackend {
  if (backend === 'js') {
    if (device !== 'cpu') throw new ConfigError(`the pure-TypeScript backend runs on cpu only, not ${device}`);
    return new JsCharLm(shape);
  }
  if (backend === 'native') return new NativeCharLm(shape, device);
  throw new ConfigError(`unknown backend ${JSON.stringify(backend)}: expected 'native' or 'js'`);
}

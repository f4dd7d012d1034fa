/** Picks a backend for the character LM by name. */
import { ConfigError } from '../errors.js';
import { JsCharLm } from './js/index.js';
import { NativeCharLm } from './native.js';
import type { CharLmBackend, CharLmShape } from './types.js';

/** Which implementation runs a model: 'native' (the Rust addon) or 'js' (the pure TypeScript reference). */
export type BackendName = 'native' | 'js';
/**
 * Where the native backend computes: 'cpu' (the default; the CPU build, nothing CUDA is looked for), a
 * CUDA GPU ('cuda' is 'cuda:0') on the CUDA build of the addon (a BackendError saying what is missing when
 * it cannot load), or 'auto': CUDA when it loads, else the CPU after one warning saying why. The
 * TypeScript backend runs on the CPU ('auto' included).
 */
export type DeviceName = 'cpu' | 'cuda' | `cuda:${number}` | 'auto';

export function createCharLmBackend(
  shape: CharLmShape,
  backend: BackendName = 'native',
  device: DeviceName = 'cpu',
): CharLmBackend {
  if (backend === 'js') {
    if (device !== 'cpu' && device !== 'auto')
      throw new ConfigError(`the pure-TypeScript backend runs on cpu only, not ${device}`);
    return new JsCharLm(shape);
  }
  if (backend === 'native') return new NativeCharLm(shape, device);
  throw new ConfigError(`unknown backend ${JSON.stringify(backend)}: expected 'native' or 'js'`);
}

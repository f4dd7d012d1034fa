/**
 * Checks shared by the flow checkpoint loaders: the file's tensors against the names and shapes a
 * model's spec or config implies, and the training state kept in the metadata. Everything is checked
 * before a native model is built, so a tampered size is a CheckpointError, never an allocation of
 * whatever the file says.
 */
import { CheckpointError } from '../errors.js';
import type { SafetensorsContents } from './safetensors.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * The data of every expected tensor, in `expected`'s order: F32, of exactly the expected shape, with
 * finite values; a missing or unexpected tensor is an error. `needs` names what implies the shapes
 * in messages (e.g. "the spec").
 */
export function expectTensors(
  path: string,
  tensors: SafetensorsContents['tensors'],
  expected: readonly { name: string; shape: readonly number[] }[],
  needs: string,
): [string, Float32Array][] {
  const names = new Set(expected.map((t) => t.name));
  for (const name of Object.keys(tensors)) {
    if (!names.has(name)) throw new CheckpointError(`${path}: unexpected tensor ${name} for ${needs}`);
  }
  return expected.map(({ name, shape }) => {
    const t = tensors[name];
    if (!t) throw new CheckpointError(`${path}: tensor ${name} is missing`);
    if (t.dtype !== 'F32' || t.shape.join(',') !== shape.join(','))
      throw new CheckpointError(`${path}: tensor ${name} is ${t.dtype}[${t.shape}] but ${needs} needs F32[${shape}]`);
    const data = t.data as Float32Array;
    if (data.length !== size(shape))
      throw new CheckpointError(`${path}: tensor ${name} holds ${data.length} values, not ${size(shape)}`);
    if (!data.every(Number.isFinite)) throw new CheckpointError(`${path}: tensor ${name} holds NaN or Inf`);
    return [name, data];
  });
}

/** The training state a checkpoint's metadata keeps under `train` (JSON), or null when it has none. */
export function readTrainInfo(path: string, metadata: Record<string, string>): Record<string, unknown> | null {
  if (metadata.train === undefined) return null;
  try {
    const info = JSON.parse(metadata.train) as unknown;
    if (info === null || typeof info !== 'object' || Array.isArray(info)) throw new Error('not an object');
    return info as Record<string, unknown>;
  } catch {
    throw new CheckpointError(`${path}: unreadable training state in metadata`);
  }
}

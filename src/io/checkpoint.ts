/**
 * The arflow checkpoint, as every model writes and reads it: one safetensors file with the parameters
 * under their PyTorch state_dict names; `format`, `format_version` and `kind` in the metadata beside the
 * model's own facts (config, vocabulary, …) and `train` (facts about the run, JSON); and, when saved for
 * resuming, the AdamW moments `optimizer.exp_avg.<param>` / `optimizer.exp_avg_sq.<param>` with the
 * step count `optimizer_step`. Loading checks the file's tensors against the names and shapes the
 * model's spec or config implies before a native model is built, so a tampered size is a
 * CheckpointError, never an allocation of whatever the file says.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import type { OptimizerAccess, OptimMoment, ParamInfo } from '../backend/types.js';
import { CheckpointError, ConfigError, DivergenceError } from '../errors.js';
import type { SafetensorsContents, TensorEntry } from './safetensors.js';

/** `format` and `format_version` of every arflow checkpoint's metadata. */
export const CHECKPOINT_FORMAT = 'arflow';
export const CHECKPOINT_FORMAT_VERSION = '1';

/** Whether a checkpoint's metadata says it is an arflow checkpoint of `kind`. */
export function isCheckpointOf(metadata: Record<string, string>, kind: string): boolean {
  return metadata.format === CHECKPOINT_FORMAT && metadata.kind === kind;
}

/** What a model backend offers for a checkpoint: its parameters and its optimizer. */
export interface CheckpointSource extends OptimizerAccess {
  paramInfo(): ParamInfo[];
  getParam(name: string): Float32Array;
}

/**
 * The tensors and metadata of a model's checkpoint: every parameter, `format`/`format_version`/`kind`,
 * the model's own `meta`, `train` as JSON when given, and with `optimizer` the AdamW state. Models add
 * what else they keep (buffers, a carried state) before writing it with `saveSafetensors`.
 * A parameter or optimizer moment holding NaN or ±Infinity (training diverged: an update overflowed
 * f32) is a DivergenceError, thrown before anything is written: a checkpoint never holds broken
 * weights, which no `load` would accept.
 */
export function checkpointContents(
  backend: CheckpointSource,
  kind: string,
  meta: Record<string, string>,
  opts: { optimizer?: boolean; train?: unknown } = {},
): { tensors: Record<string, TensorEntry>; metadata: Record<string, string> } {
  const tensors: Record<string, TensorEntry> = {};
  const params = backend.paramInfo();
  for (const p of params) tensors[p.name] = { dtype: 'F32', shape: p.shape, data: backend.getParam(p.name) };
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    format_version: CHECKPOINT_FORMAT_VERSION,
    kind,
    ...meta,
  };
  if (opts.optimizer) addOptimizerState(backend, params, tensors, metadata);
  for (const [name, t] of Object.entries(tensors)) refuseNonFinite(name, t.data as Float32Array);
  if (opts.train) metadata.train = JSON.stringify(opts.train);
  return { tensors, metadata };
}

/** DivergenceError when tensor `name` of a checkpoint being written holds NaN or ±Infinity. */
function refuseNonFinite(name: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]))
      throw new DivergenceError(
        `training diverged: tensor ${name} holds ${data[i]} (value ${i} of ${data.length}); refusing to save non-finite weights, nothing was written`,
      );
  }
}

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

/**
 * Prefix of the AdamW moments in a checkpoint, as the char LM writes them (PyTorch's names):
 * `optimizer.exp_avg.<param>` and `optimizer.exp_avg_sq.<param>`, one of each per parameter (never for
 * buffers), with the optimizer's step count in the metadata as `optimizer_step`.
 */
export const OPTIM_PREFIX = 'optimizer.';
const MOMENTS: readonly OptimMoment[] = ['exp_avg', 'exp_avg_sq'];

/** AdamW state read from a checkpoint and checked: the step and every moment of every parameter. */
export interface OptimizerState {
  step: number;
  moments: [OptimMoment, string, Float32Array][];
}

/** Adds the optimizer's moments of every parameter in `params` and its step to a checkpoint being written. */
export function addOptimizerState(
  backend: OptimizerAccess,
  params: readonly { name: string; shape: readonly number[] }[],
  tensors: Record<string, TensorEntry>,
  metadata: Record<string, string>,
): void {
  for (const which of MOMENTS) {
    for (const p of params) {
      tensors[`${OPTIM_PREFIX}${which}.${p.name}`] = {
        dtype: 'F32',
        shape: [...p.shape],
        data: backend.getOptimState(which, p.name),
      };
    }
  }
  metadata.optimizer_step = String(backend.getOptimStep());
}

/**
 * Splits a checkpoint's tensors into the optimizer's (`optimizer.*`) and the rest, and checks the
 * optimizer's: none at all (no `optimizer_step`, no `optimizer.*` tensor) is `null`; otherwise
 * `optimizer_step` must be a whole number ≥ 0 and the tensors exactly one `exp_avg` and one
 * `exp_avg_sq` per parameter, F32 of the parameter's shape, finite (and `exp_avg_sq` ≥ 0). Some but
 * not all of it is a CheckpointError, as is anything else wrong.
 */
export function readOptimizerState(
  path: string,
  tensors: SafetensorsContents['tensors'],
  metadata: Record<string, string>,
  params: readonly { name: string; shape: readonly number[] }[],
  needs: string,
): { rest: SafetensorsContents['tensors']; optimizer: OptimizerState | null } {
  const rest: SafetensorsContents['tensors'] = {};
  const mine: SafetensorsContents['tensors'] = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (name.startsWith(OPTIM_PREFIX)) mine[name] = t;
    else rest[name] = t;
  }
  const raw = metadata.optimizer_step;
  const names = Object.keys(mine);
  if (raw === undefined) {
    if (names.length === 0) return { rest, optimizer: null };
    throw new CheckpointError(
      `${path}: it holds optimizer state (${names[0]}…) but no optimizer_step in its metadata: the optimizer state is incomplete`,
    );
  }
  const step = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(step))
    throw new CheckpointError(
      `${path}: optimizer_step ${JSON.stringify(raw)} in its metadata is not a whole number from 0 to ${MAX_OPTIM_STEP} (2^53 − 1)`,
    );
  const expected = MOMENTS.flatMap((which) =>
    params.map((p) => ({ which, param: p.name, name: `${OPTIM_PREFIX}${which}.${p.name}`, shape: p.shape })),
  );
  const checked = expectTensors(path, mine, expected, `the optimizer state of ${needs}`);
  const moments = checked.map(([name, data], i): [OptimMoment, string, Float32Array] => {
    const { which, param } = expected[i];
    if (which === 'exp_avg_sq') {
      const bad = data.findIndex((v) => v < 0);
      if (bad >= 0)
        throw new CheckpointError(
          `${path}: tensor ${name} holds a negative value (${data[bad]} at ${bad}); a second moment is never negative`,
        );
    }
    return [which, param, data];
  });
  return { rest, optimizer: { step, moments } };
}

/** Loads checked optimizer state into a backend; what it refuses is the checkpoint's fault. */
export function applyOptimizerState(path: string, backend: OptimizerAccess, state: OptimizerState): void {
  for (const [which, name, data] of state.moments) {
    try {
      backend.setOptimState(which, name, data);
    } catch (e) {
      throw new CheckpointError(`${path}: tensor ${OPTIM_PREFIX}${which}.${name}: ${(e as Error).message}`);
    }
  }
  try {
    backend.setOptimStep(state.step);
  } catch (e) {
    throw new CheckpointError(`${path}: optimizer_step ${state.step}: ${(e as Error).message}`);
  }
  // A step the backend cannot hold would come back changed (and bias-correct the moments wrongly).
  const held = backend.getOptimStep();
  if (held !== state.step)
    throw new CheckpointError(
      `${path}: optimizer_step ${state.step} in its metadata cannot be restored: the optimizer holds ${held}`,
    );
}

/** Largest `optimizer_step` a checkpoint may hold: 2^53 − 1, the largest whole number a double holds exactly. */
export const MAX_OPTIM_STEP = Number.MAX_SAFE_INTEGER;

/**
 * Checks `fit`'s `resume` against the model: continuing a run needs the optimizer state of its steps
 * (a model loaded with it, or trained in this process); a ConfigError otherwise.
 */
export function checkResumable(hasOptimizerState: boolean, resume: { step: number } | null | undefined): void {
  if (resume == null || hasOptimizerState) return;
  throw new ConfigError(
    `resume: this model holds no optimizer state (it is new, or its checkpoint was saved without { optimizer: true }), so there is no run to continue; train it without resume, or load a checkpoint saved with { optimizer: true }`,
  );
}

/** The metadata `kind` of a safetensors checkpoint (reads only its header), or null if unreadable. */
export function checkpointKind(path: string): string | null {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(8);
    if (readSync(fd, head, 0, 8, 0) !== 8) return null;
    const len = Number(head.readBigUInt64LE(0));
    if (!(len > 0 && len < 100_000_000)) return null;
    const json = Buffer.alloc(len);
    if (readSync(fd, json, 0, len, 8) !== len) return null;
    const header = JSON.parse(json.toString('utf8')) as { __metadata__?: Record<string, string> };
    return header.__metadata__?.kind ?? null;
  } catch {
    return null;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

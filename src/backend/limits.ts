/**
 * Bounds on the size of a model, checked from its spec or config before anything is allocated, so a
 * typo'd or tampered width ("hidden": 1000000000) is a ConfigError naming the field rather than an
 * allocation failure that aborts the process. The native core checks the same bound
 * (`crates/arflow-core/src/params.rs`, `MAX_PARAMS`) and asks its allocator fallibly for what is under it.
 */
import { ConfigError } from '../errors.js';

/** Most parameter values a model may hold: 2³¹ (8 GiB of f32 before the optimizer's two moments). */
export const MAX_PARAMS = 2 ** 31;

/** Most parameter and buffer tensors a flow spec may list (as `MAX_TENSORS` in the native spec). */
export const MAX_TENSORS = 2 ** 20;

/** Elements of a tensor of `shape`. */
export function tensorSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A count for a message: exact below a billion, else in scientific notation. */
export function formatCount(n: number): string {
  return n < 1e9 ? String(n) : n.toExponential(2).replace('e+', 'e');
}

/** A named tensor with its shape. */
interface Sized {
  name: string;
  shape: readonly number[];
}

/** The tensor with the most elements, or undefined for an empty list. */
export function largestTensor<T extends Sized>(tensors: readonly T[]): T | undefined {
  let best: T | undefined;
  for (const t of tensors) if (best === undefined || tensorSize(t.shape) > tensorSize(best.shape)) best = t;
  return best;
}

/**
 * Throws a ConfigError when `tensors` hold more than {@link MAX_PARAMS} values in all; `cause` names
 * what makes them big (the field to lower) and is given the largest tensor.
 */
export function checkParamCount<T extends Sized>(
  what: string,
  tensors: readonly T[],
  cause: (largest: T) => string,
): void {
  let total = 0;
  for (const t of tensors) total += tensorSize(t.shape);
  if (total <= MAX_PARAMS) return;
  const big = largestTensor(tensors) as T;
  throw new ConfigError(
    `${what} would have ${formatCount(total)} parameters, more than the 2^31 = ${MAX_PARAMS} a model may hold: ` +
      `${cause(big)} (its largest tensor, ${big.name}, is [${big.shape.join(', ')}])`,
  );
}

/** A value as a message shows it: strings quoted and called strings, so `"2"` is not mistaken for 2. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v === 'object' ? ((v as object).constructor?.name ?? 'object') : typeof v}`;
}

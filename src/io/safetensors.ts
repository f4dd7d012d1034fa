/**
 * The safetensors format (https://github.com/huggingface/safetensors), read and written in plain
 * TypeScript so checkpoints open in PyTorch/`safetensors` and vice versa:
 *
 *   [u64 little-endian N] [N bytes of UTF-8 JSON header, space-padded to a multiple of 8] [tensor bytes]
 *
 * The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative
 * to the first byte after the header) plus an optional `__metadata__` object of string → string.
 * Tensors are packed back to back and must cover the data section exactly; everything is little-endian.
 *
 * Reading is strict because a checkpoint is untrusted input: every inconsistency becomes a
 * `CheckpointError` naming the file, instead of a garbage model or a RangeError deep inside a kernel.
 * Writing goes through {@link writeFileAtomic}, so a crash or a full disk never leaves a half-written
 * checkpoint where a good one used to be.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CheckpointError } from '../errors.js';

/** The typed array that holds each supported dtype (those JavaScript has a native array for). */
interface DataByDtype {
  U8: Uint8Array;
  I8: Int8Array;
  U16: Uint16Array;
  I16: Int16Array;
  U32: Uint32Array;
  I32: Int32Array;
  U64: BigUint64Array;
  I64: BigInt64Array;
  F32: Float32Array;
  F64: Float64Array;
}

export type Dtype = keyof DataByDtype;

/** One tensor: `data` is row-major with `shape.reduce(*)` elements; the dtype fixes the array type. */
export type TensorEntry = { [D in Dtype]: { dtype: D; shape: number[]; data: DataByDtype[D] } }[Dtype];

/** What {@link loadSafetensors} returns: the named tensors and the file's string metadata. */
export interface SafetensorsContents {
  tensors: Record<string, TensorEntry>;
  metadata: Record<string, string>;
}

type TensorData = DataByDtype[Dtype];

const ARRAY_TYPES: { [D in Dtype]: { new (buffer: ArrayBuffer): DataByDtype[D]; BYTES_PER_ELEMENT: number } } = {
  U8: Uint8Array,
  I8: Int8Array,
  U16: Uint16Array,
  I16: Int16Array,
  U32: Uint32Array,
  I32: Int32Array,
  U64: BigUint64Array,
  I64: BigInt64Array,
  F32: Float32Array,
  F64: Float64Array,
};

const METADATA_KEY = '__metadata__';

/** Typed arrays use the host's byte order; the format is little-endian, so big-endian hosts swap. */
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.hasOwn(ARRAY_TYPES, s);
}

/** Reverses each `width`-byte element in place (big-endian hosts only). */
function swapBytes(bytes: Uint8Array, width: number): void {
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
}

/**
 * Assigns an own property even for names like `__proto__`, which plain assignment would turn into a
 * prototype change: tensor names and metadata keys come from files and users.
 */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The tensor's bytes in file order (little-endian). A view when the host is little-endian. */
function fileBytes(data: TensorData): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (HOST_IS_LITTLE_ENDIAN || data.BYTES_PER_ELEMENT === 1) return view;
  const copy = new Uint8Array(view);
  swapBytes(copy, data.BYTES_PER_ELEMENT);
  return copy;
}

/**
 * Serialises tensors (in insertion order, so the output is deterministic) and optional string
 * metadata. `__metadata__` comes first and the header is padded with spaces to a multiple of 8 bytes,
 * as the reference Rust writer does, so every tensor starts 8-byte aligned in the file.
 * Throws CheckpointError for a tensor whose data does not match its dtype or shape.
 */
export function encodeSafetensors(tensors: Record<string, TensorEntry>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    const meta: Record<string, string> = {};
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') {
        throw new CheckpointError(`cannot write metadata "${key}": safetensors metadata values must be strings`);
      }
      setOwn(meta, key, value);
    }
    header[METADATA_KEY] = meta;
  }
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, entry] of Object.entries(tensors)) {
    const what = `cannot write tensor ${JSON.stringify(name)}`;
    if (name === METADATA_KEY) throw new CheckpointError(`${what}: the name is reserved for metadata`);
    if (!isDtype(entry.dtype)) throw new CheckpointError(`${what}: unsupported dtype ${JSON.stringify(entry.dtype)}`);
    if (!(entry.data instanceof ARRAY_TYPES[entry.dtype])) {
      throw new CheckpointError(`${what}: dtype ${entry.dtype} needs a ${ARRAY_TYPES[entry.dtype].name}`);
    }
    if (!Array.isArray(entry.shape) || !entry.shape.every(isCount)) {
      throw new CheckpointError(`${what}: shape must be an array of non-negative integers`);
    }
    if (elementCount(entry.shape) !== entry.data.length) {
      throw new CheckpointError(
        `${what}: shape [${entry.shape}] has ${elementCount(entry.shape)} elements but the data has ${entry.data.length}`,
      );
    }
    const bytes = fileBytes(entry.data);
    setOwn(header, name, {
      dtype: entry.dtype,
      shape: [...entry.shape],
      data_offsets: [offset, offset + bytes.length],
    });
    parts.push(bytes);
    offset += bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let pos = 8 + headerLength;
  for (const part of parts) {
    out.set(part, pos);
    pos += part.length;
  }
  return out;
}

interface Slot {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses and validates a safetensors file. `source` (a path) names the file in error messages.
 * Tensor data is copied into fresh, aligned arrays, so the result does not keep `bytes` alive and is
 * safe to hand to typed-array views of any width.
 */
export function decodeSafetensors(bytes: Uint8Array, source = '<bytes>'): SafetensorsContents {
  const fail = (problem: string) => new CheckpointError(`${source} is not a valid safetensors file: ${problem}`);
  if (bytes.length < 8) {
    throw fail(`it is ${bytes.length} bytes long, shorter than the 8-byte header length`);
  }
  const declared = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  if (declared > BigInt(bytes.length - 8)) {
    throw fail(
      `the header length (${declared} bytes) runs past the end of the file (${bytes.length} bytes; truncated?)`,
    );
  }
  const headerLength = Number(declared);
  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength));
    header = JSON.parse(text);
  } catch (err) {
    throw fail(`the header is not UTF-8 JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(header)) throw fail('the header is not a JSON object');

  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const slots: Slot[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (info === null) continue;
      if (!isPlainObject(info)) throw fail('__metadata__ is not an object');
      for (const [key, value] of Object.entries(info)) {
        if (typeof value !== 'string') throw fail(`metadata value for ${JSON.stringify(key)} is not a string`);
        setOwn(metadata, key, value);
      }
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(info)) throw fail(`${where} is not described by an object`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (!isDtype(dtype)) throw fail(`${where} has unknown or unsupported dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw fail(`${where} has shape ${JSON.stringify(shape)}, not an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw fail(`${where} has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = elementCount(shape) * ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
    if (end - begin !== expected) {
      throw fail(
        `${where} has shape [${shape}] of ${dtype} (${expected} bytes) but data_offsets span ${end - begin} bytes`,
      );
    }
    if (end > dataLength) {
      throw fail(`${where} ends at data byte ${end} but the data section has only ${dataLength} bytes (truncated?)`);
    }
    slots.push({ name, dtype, shape, begin, end });
  }

  // The tensors must tile the data section exactly: no overlaps (two tensors sharing bytes), no gaps
  // or trailing bytes (a sign of a writer bug or of two files concatenated).
  const ordered = [...slots].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  for (const slot of ordered) {
    if (slot.begin < covered) throw fail(`tensor ${JSON.stringify(slot.name)} overlaps the tensor before it`);
    if (slot.begin > covered) throw fail(`data bytes ${covered}..${slot.begin} belong to no tensor`);
    covered = slot.end;
  }
  if (covered !== dataLength) throw fail(`${dataLength - covered} trailing bytes after the last tensor`);

  const tensors: Record<string, TensorEntry> = {};
  for (const { name, dtype, shape, begin, end } of slots) {
    const copy = new Uint8Array(end - begin);
    copy.set(bytes.subarray(dataStart + begin, dataStart + end));
    const width = ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
    if (!HOST_IS_LITTLE_ENDIAN && width > 1) swapBytes(copy, width);
    setOwn(tensors, name, { dtype, shape, data: new ARRAY_TYPES[dtype](copy.buffer) } as TensorEntry);
  }
  return { tensors, metadata };
}

/**
 * What `path` is when it exists and is not a regular file (after following symbolic links): 'a
 * directory', 'a FIFO (named pipe)', 'a character device', 'a block device', 'a socket' or 'not a
 * regular file'. Null for a regular file, a missing path or one that cannot be examined (the write
 * itself then reports why).
 */
export function specialFileKind(path: string): string | null {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path, { throwIfNoEntry: false });
  } catch {
    return null;
  }
  if (st === undefined || st.isFile()) return null;
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Replaces `path` with `bytes` all-or-nothing: the bytes go to a temporary file in the same directory
 * (same filesystem, so the rename is atomic), are fsynced, and the temp file is renamed over the
 * target. Readers see the old file or the new one, never a mix; on any failure the temp file is
 * removed, an existing target is left untouched and the original error is rethrown. Parent
 * directories are created. A `path` that exists but is not a regular file (a directory, a FIFO, a
 * device such as /dev/null, a socket; symbolic links followed) is refused, never replaced by the
 * rename. Synchronous: a checkpoint is written between training steps, and nothing else should touch
 * the model while it is.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const special = specialFileKind(path);
  if (special !== null) throw new Error(`${path} is ${special}, not a regular file: refusing to replace it`);
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.tmp-${basename(path)}-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    const fd = openSync(tmp, 'wx');
    try {
      writeFileSync(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  // Make the rename itself durable. Best effort: some platforms (Windows) cannot open or fsync a
  // directory, and the new file is in place either way.
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // the data is written; only the directory entry's durability across a power cut is unknown
  }
}

/** Encodes and writes atomically; failures become CheckpointError naming the path. */
export function saveSafetensors(
  path: string,
  tensors: Record<string, TensorEntry>,
  metadata?: Record<string, string>,
): void {
  const bytes = encodeSafetensors(tensors, metadata);
  try {
    writeFileAtomic(path, bytes);
  } catch (err) {
    throw new CheckpointError(`cannot write checkpoint ${path}: ${(err as Error).message}`);
  }
}

/** Reads and validates a safetensors file; a missing or unreadable file is a CheckpointError. */
export function loadSafetensors(path: string): SafetensorsContents {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CheckpointError(
      code === 'ENOENT' ? `checkpoint not found: ${path}` : `cannot read checkpoint ${path}: ${(err as Error).message}`,
    );
  }
  return decodeSafetensors(bytes, path);
}

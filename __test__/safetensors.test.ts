import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CheckpointError } from '../src/errors.js';
import {
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  saveSafetensors,
  type TensorEntry,
  writeFileAtomic,
} from '../src/io/safetensors.js';

/** Lets a test make renameSync fail, to simulate a crash between writing the temp file and renaming it. */
const injected = vi.hoisted(() => ({ failRename: false }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return {
    ...fs,
    renameSync: (from: string, to: string) => {
      if (injected.failRename) throw Object.assign(new Error('injected rename failure'), { code: 'EIO' });
      fs.renameSync(from, to);
    },
  };
});

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-st-'));
});
afterEach(() => {
  injected.failRename = false;
  rmSync(dir, { recursive: true, force: true });
});

const sample = (): Record<string, TensorEntry> => ({
  'embedding.weight': { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-7, -0]) },
  'gru.bias': { dtype: 'F64', shape: [3], data: Float64Array.from([Math.PI, -1e300, 5e-324]) },
  ids: { dtype: 'U32', shape: [4], data: Uint32Array.from([0, 1, 0xffffffff, 7]) },
  signed: { dtype: 'I32', shape: [2], data: Int32Array.from([-2147483648, 5]) },
  big: { dtype: 'I64', shape: [1], data: BigInt64Array.from([-(2n ** 62n)]) },
  scalar: { dtype: 'F32', shape: [], data: Float32Array.from([42]) },
  empty: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
});

const meta = { format: 'arflow', vocab: '{"chars":["a","é","😀"]}' };

/** Bytes of a little-endian u64. */
function u64(n: number): number[] {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return [...b];
}

/** A file from a header object and raw data bytes, laid out by hand (header padded to 8 with spaces). */
function handBuilt(header: unknown, data: number[], pad = true): Uint8Array {
  let json = JSON.stringify(header);
  if (pad) json += ' '.repeat((8 - (json.length % 8)) % 8);
  const h = new TextEncoder().encode(json);
  return Uint8Array.from([...u64(h.length), ...h, ...data]);
}

describe('safetensors encode/decode', () => {
  it('round-trips every dtype, shapes, metadata and tensor order', () => {
    const bytes = encodeSafetensors(sample(), meta);
    const { tensors, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual(meta);
    expect(Object.keys(tensors)).toEqual(Object.keys(sample()));
    for (const [name, want] of Object.entries(sample())) {
      const got = tensors[name];
      expect(got.dtype).toBe(want.dtype);
      expect(got.shape).toEqual(want.shape);
      expect(got.data.constructor).toBe(want.data.constructor);
      expect([...got.data]).toEqual([...want.data]);
    }
    // -0 survives bit-exactly
    expect(Object.is(tensors['embedding.weight'].data[5], -0)).toBe(true);
  });

  it('is deterministic and aligns the data to 8 bytes', () => {
    const a = encodeSafetensors(sample(), meta);
    expect(encodeSafetensors(sample(), meta)).toEqual(a);
    const n = Number(new DataView(a.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
  });

  it('writes the exact bytes the spec prescribes for a tiny file', () => {
    const bytes = encodeSafetensors({ w: { dtype: 'F32', shape: [2], data: Float32Array.from([1, -2]) } }, { k: 'v' });
    const json = '{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    expect(json.length).toBe(79); // padded with one space to 80
    const expected = Uint8Array.from([
      ...u64(80),
      ...new TextEncoder().encode(`${json} `),
      ...[0x00, 0x00, 0x80, 0x3f], // 1.0f little-endian
      ...[0x00, 0x00, 0x00, 0xc0], // -2.0f
    ]);
    expect(bytes).toEqual(expected);
  });

  it('pads the header with spaces to a multiple of 8', () => {
    const bytes = encodeSafetensors({ x: { dtype: 'U32', shape: [1], data: Uint32Array.from([0x01020304]) } });
    const json = '{"x":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}}';
    expect(json.length).toBe(54);
    const expected = Uint8Array.from([
      ...u64(56),
      ...new TextEncoder().encode(`${json}  `),
      ...[0x04, 0x03, 0x02, 0x01],
    ]);
    expect(bytes).toEqual(expected);
  });

  it('decodes a file laid out by another writer (tensors out of header order, null metadata, no padding)', () => {
    // Two tensors whose header order differs from their data order, as the Rust writer produces
    // (it sorts by dtype alignment, then name).
    const bytes = handBuilt(
      {
        __metadata__: null,
        b: { dtype: 'I32', shape: [1], data_offsets: [8, 12] },
        a: { dtype: 'F64', shape: [1, 1], data_offsets: [0, 8] },
      },
      [0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0xff, 0xff, 0xff, 0xff], // 1.0 (f64), -1 (i32)
      false,
    );
    const { tensors, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual({});
    expect(tensors.a).toEqual({ dtype: 'F64', shape: [1, 1], data: Float64Array.from([1]) });
    expect(tensors.b).toEqual({ dtype: 'I32', shape: [1], data: Int32Array.from([-1]) });
  });

  it('returns aligned copies even from an unaligned buffer', () => {
    const bytes = encodeSafetensors({ x: { dtype: 'F64', shape: [2], data: Float64Array.from([1.5, 2.5]) } });
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    const { tensors } = decodeSafetensors(shifted.subarray(3));
    expect(tensors.x.data.byteOffset).toBe(0);
    expect([...tensors.x.data]).toEqual([1.5, 2.5]);
    shifted.fill(0);
    expect([...tensors.x.data]).toEqual([1.5, 2.5]);
  });

  it('keeps a tensor named __proto__ as an ordinary entry', () => {
    const bytes = handBuilt({ ['__proto__']: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, [9]);
    const { tensors } = decodeSafetensors(bytes);
    expect(Object.getPrototypeOf(tensors)).toBe(Object.prototype);
    expect(Object.keys(tensors)).toEqual(['__proto__']);
  });

  it('rejects tensors that do not match their dtype or shape when writing', () => {
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).toThrow(
      /shape \[3\] has 3 elements but the data has 2/,
    );
    expect(() =>
      encodeSafetensors({ x: { dtype: 'F32', shape: [2], data: new Float64Array(2) } as unknown as TensorEntry }),
    ).toThrow(CheckpointError);
    expect(() => encodeSafetensors({ __metadata__: { dtype: 'F32', shape: [0], data: new Float32Array(0) } })).toThrow(
      /reserved/,
    );
    expect(() => encodeSafetensors({}, { n: 1 as unknown as string })).toThrow(/must be strings/);
  });
});

describe('safetensors corruption', () => {
  const valid = () => encodeSafetensors(sample(), meta);

  /** Expects a CheckpointError naming the file and matching `problem`. */
  function rejects(bytes: Uint8Array, problem: RegExp) {
    let caught: unknown;
    try {
      decodeSafetensors(bytes, 'model.safetensors');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CheckpointError);
    expect((caught as Error).message).toMatch(/^model\.safetensors is not a valid safetensors file: /);
    expect((caught as Error).message).toMatch(problem);
  }

  it('rejects a file truncated anywhere', () => {
    const bytes = valid();
    const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
    rejects(bytes.subarray(0, 0), /0 bytes long/);
    rejects(bytes.subarray(0, 7), /7 bytes long/);
    rejects(bytes.subarray(0, 8), /runs past the end/);
    rejects(bytes.subarray(0, headerEnd - 1), /runs past the end/);
    rejects(bytes.subarray(0, headerEnd), /ends at data byte \d+ but the data section has only 0 bytes/);
    rejects(bytes.subarray(0, bytes.length - 1), /truncated/);
    for (let cut = 1; cut < bytes.length; cut += 7) {
      expect(() => decodeSafetensors(bytes.subarray(0, cut))).toThrow(CheckpointError);
    }
  });

  it('rejects trailing bytes after the last tensor', () => {
    const bytes = valid();
    rejects(Uint8Array.from([...bytes, 0]), /1 trailing bytes/);
  });

  it('rejects a header that is not JSON, not UTF-8 or not an object', () => {
    const bytes = valid();
    const flipped = Uint8Array.from(bytes);
    flipped[8] = '['.charCodeAt(0); // "{" -> "[" breaks the JSON
    rejects(flipped, /not UTF-8 JSON/);
    const badUtf8 = Uint8Array.from(bytes);
    badUtf8[9] = 0xff;
    rejects(badUtf8, /not UTF-8 JSON/);
    rejects(handBuilt([1, 2], []), /not a JSON object/);
    rejects(handBuilt(null, []), /not a JSON object/);
  });

  it('rejects unknown dtypes, bad shapes and mismatched offsets', () => {
    const four = [1, 2, 3, 4];
    rejects(
      handBuilt({ x: { dtype: 'F17', shape: [1], data_offsets: [0, 4] } }, four),
      /unknown or unsupported dtype "F17"/,
    );
    rejects(handBuilt({ x: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] } }, four), /unsupported dtype "BF16"/);
    rejects(handBuilt({ x: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, four), /shape \[-1\]/);
    rejects(handBuilt({ x: { dtype: 'F32', shape: '1', data_offsets: [0, 4] } }, four), /shape "1"/);
    rejects(
      handBuilt({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, four),
      /\(8 bytes\) but data_offsets span 4/,
    );
    rejects(handBuilt({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, four), /data_offsets \[4,0\]/);
    rejects(handBuilt({ x: { dtype: 'F32', shape: [1], data_offsets: [0] } }, four), /data_offsets \[0\]/);
    rejects(handBuilt({ x: { dtype: 'F32', shape: [1] } }, four), /data_offsets undefined/);
    rejects(handBuilt({ x: 5 }, four), /tensor "x" is not described by an object/);
  });

  it('rejects offsets out of range, overlapping or leaving gaps', () => {
    const eight = [1, 2, 3, 4, 5, 6, 7, 8];
    rejects(handBuilt({ x: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, eight), /ends at data byte 12/);
    rejects(
      handBuilt(
        {
          x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
          y: { dtype: 'F32', shape: [1], data_offsets: [2, 6] },
        },
        eight,
      ),
      /tensor "y" overlaps/,
    );
    rejects(
      handBuilt({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, eight),
      /data bytes 0\.\.4 belong to no tensor/,
    );
    rejects(handBuilt({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, eight), /4 trailing bytes/);
  });

  it('rejects metadata that is not an object of strings', () => {
    rejects(handBuilt({ __metadata__: { n: 1 } }, []), /metadata value for "n" is not a string/);
    rejects(handBuilt({ __metadata__: ['a'] }, []), /__metadata__ is not an object/);
  });
});

describe('safetensors files', () => {
  it('saves and loads, creating parent directories', () => {
    const path = join(dir, 'a', 'b', 'model.safetensors');
    saveSafetensors(path, sample(), meta);
    const { tensors, metadata } = loadSafetensors(path);
    expect(metadata).toEqual(meta);
    expect([...tensors.ids.data]).toEqual([0, 1, 0xffffffff, 7]);
    expect(readdirSync(join(dir, 'a', 'b'))).toEqual(['model.safetensors']);
  });

  it('names the path of a missing or corrupt checkpoint', () => {
    const missing = join(dir, 'nope.safetensors');
    expect(() => loadSafetensors(missing)).toThrow(CheckpointError);
    expect(() => loadSafetensors(missing)).toThrow(`checkpoint not found: ${missing}`);
    const corrupt = join(dir, 'bad.safetensors');
    writeFileSync(corrupt, 'hello world');
    expect(() => loadSafetensors(corrupt)).toThrow(`${corrupt} is not a valid safetensors file`);
    expect(() => loadSafetensors(dir)).toThrow(`cannot read checkpoint ${dir}`);
  });

  it('replaces an existing file', () => {
    const path = join(dir, 'm.safetensors');
    saveSafetensors(path, sample(), { v: '1' });
    saveSafetensors(path, sample(), { v: '2' });
    expect(loadSafetensors(path).metadata).toEqual({ v: '2' });
    expect(readdirSync(dir)).toEqual(['m.safetensors']);
  });

  it('leaves the old file intact and no temp file when the rename fails', () => {
    const path = join(dir, 'm.safetensors');
    saveSafetensors(path, sample(), { v: 'old' });
    const before = readFileSync(path);
    injected.failRename = true;
    expect(() => saveSafetensors(path, sample(), { v: 'new' })).toThrow(
      /cannot write checkpoint .*injected rename failure/,
    );
    expect(readFileSync(path)).toEqual(before);
    expect(readdirSync(dir)).toEqual(['m.safetensors']);
  });

  it('cleans up when the target is a directory', () => {
    const path = join(dir, 'taken');
    mkdirSync(path);
    writeFileSync(join(path, 'keep'), 'x');
    expect(() => writeFileAtomic(path, Uint8Array.from([1, 2, 3]))).toThrow();
    expect(readdirSync(dir)).toEqual(['taken']);
    expect(readFileSync(join(path, 'keep'), 'utf8')).toBe('x');
  });

  it('writes nothing when the tensors are invalid', () => {
    const path = join(dir, 'm.safetensors');
    expect(() => saveSafetensors(path, { x: { dtype: 'F32', shape: [5], data: new Float32Array(1) } })).toThrow(
      CheckpointError,
    );
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });
});

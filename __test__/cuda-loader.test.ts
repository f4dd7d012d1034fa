/**
 * The CUDA loader on a machine without a GPU, as CI is: the CUDA build of the addon is test-loaded in a
 * child process and refused with what is missing (a BackendError that also says the CPU build is still
 * there), the process survives, device 'auto' trains on the CPU after one warning, and device 'cpu' never
 * looks for CUDA. Every case but one makes its own files; the one that loads the real CUDA build is
 * skipped, saying so, where that file is absent.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { nativePlatform } from '../src/backend/native.js';
import { Vocabulary } from '../src/data/vocab.js';
import { BackendError, ConfigError } from '../src/errors.js';
import { CharLM } from '../src/models/char-lm.js';
import { thrown } from './helpers/thrown.js';

/** Counts the loader's child processes: the real spawnSync, watched. */
vi.mock('node:child_process', async (importOriginal) => {
  const cp = await importOriginal<typeof import('node:child_process')>();
  const spawnSync = vi.fn(cp.spawnSync);
  return { ...cp, default: { ...cp, spawnSync }, spawnSync };
});
const spawned = vi.mocked(spawnSync);

/** A CUDA build made by `npm run build:native:cuda` elsewhere (scripts/build-native-cuda.sh). */
const REAL_CUDA_BUILD = process.env.ARFLOW_TEST_CUDA_BUILD ?? '/tmp/cuda-wt/arflow.linux-x64-gnu-cuda.node';
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CPU_BUILD = join(ROOT, `arflow.${nativePlatform()}.node`);
const DIST = join(ROOT, 'dist', 'index.js');
/** The link stubs scripts/build-native-cuda.sh writes: every CUDA entry point, each returning an error. */
const STUBS = join(ROOT, '.cuda', 'py', 'nvidia', 'cu13', 'lib', 'stubs');
const TEXT = 'the cat sat on the mat, the dog sat on the log. '.repeat(40);
const savedEnv = process.env.ARFLOW_NATIVE_CUDA;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-cuda-loader-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
afterEach(() => {
  if (savedEnv === undefined) delete process.env.ARFLOW_NATIVE_CUDA;
  else process.env.ARFLOW_NATIVE_CUDA = savedEnv;
  spawned.mockClear();
  vi.restoreAllMocks();
});

function create(device: 'cpu' | 'cuda' | 'cuda:1' | 'auto' | undefined): CharLM {
  return CharLM.create(Vocabulary.fromText(TEXT), { embed: 8, hidden: 16, layers: 1 }, { seed: 0, device });
}

/** A file the loader finds but no dynamic loader accepts. */
function notALibrary(name: string): string {
  const path = join(dir, name);
  writeFileSync(path, 'this is not a shared library\n');
  return path;
}

describe('device cuda on a machine without CUDA', () => {
  it('ARFLOW_NATIVE_CUDA naming a missing file: a BackendError saying how to build or install the CUDA build', () => {
    process.env.ARFLOW_NATIVE_CUDA = join(dir, 'missing-cuda.node');
    const e = thrown(() => create('cuda'));
    expect(e).toBeInstanceOf(BackendError);
    expect(e.message).toContain('missing-cuda.node, which does not exist');
    expect(e.message).toContain('npm run build:native:cuda');
    expect(e.message).toContain(`@arflow/binding-${nativePlatform()}-cuda`);
    expect(e.message).toContain("use device 'cpu'");
    expect(spawned).not.toHaveBeenCalled();
  });

  it('a file that is not a shared library: a BackendError saying so, from the child that tried it', () => {
    process.env.ARFLOW_NATIVE_CUDA = notALibrary('garbage-cuda.node');
    const e = thrown(() => create('cuda:1'));
    expect(e).toBeInstanceOf(BackendError);
    expect(e.message).toMatch(/^device cuda:1 is not available: the CUDA build of the arflow addon cannot load here/);
    expect(e.message).toContain('garbage-cuda.node: it is not a loadable native addon');
    expect(e.message).toContain("The CPU build is still available: use device 'cpu'");
    expect(spawned).toHaveBeenCalledTimes(1);
    // The failure is remembered: asking again neither spawns nor changes the answer.
    expect(thrown(() => create('cuda')).message).toContain('garbage-cuda.node: it is not a loadable native addon');
    expect(spawned).toHaveBeenCalledTimes(1);
  });

  const cpuBuilt = existsSync(CPU_BUILD);
  it.skipIf(!cpuBuilt)(
    `the CPU build named as the CUDA one: refused, as it was built without CUDA${cpuBuilt ? '' : ` (skipped: no ${CPU_BUILD}; npm run build:native)`}`,
    () => {
      process.env.ARFLOW_NATIVE_CUDA = CPU_BUILD;
      const e = thrown(() => create('cuda'));
      expect(e).toBeInstanceOf(BackendError);
      expect(e.message).toContain('it is not a CUDA build');
    },
  );

  const real = existsSync(REAL_CUDA_BUILD);
  it.skipIf(!real)(
    `the real CUDA build: names the NVIDIA driver (libcuda.so.1), and this process lives on${real ? '' : ` (skipped: no CUDA build at ${REAL_CUDA_BUILD}; make one with \`npm run build:native:cuda\` and point ARFLOW_TEST_CUDA_BUILD at it)`}`,
    async () => {
      process.env.ARFLOW_NATIVE_CUDA = REAL_CUDA_BUILD;
      const e = thrown(() => create('cuda'));
      expect(e).toBeInstanceOf(BackendError);
      expect(e.message).toContain('the NVIDIA driver (libcuda.so.1) is not installed');
      expect(e.message).toContain("use device 'cpu'");
      expect(spawned).toHaveBeenCalledTimes(1);
      // Still here, and the CPU build still trains.
      const summary = await create('cpu').fit(TEXT, { steps: 2, batchSize: 2, seqLen: 8 });
      expect(Number.isFinite(summary.trainLoss)).toBe(true);
    },
  );

  // With stubs standing in for the driver and cuBLAS the CUDA build loads in-process next to the CPU one,
  // and opening the GPU fails in Rust. The library path is read at start-up: a child process with dist/.
  const stubbed = real && existsSync(STUBS) && existsSync(DIST);
  it.skipIf(!stubbed)(
    `a CUDA build that loads but cannot open the GPU: cuda is a BackendError, auto trains on the CPU${stubbed ? '' : ` (skipped: needs ${REAL_CUDA_BUILD}, the link stubs in ${STUBS} that \`npm run build:native:cuda\` writes, and ${DIST})`}`,
    () => {
      const libs = join(dir, 'stub-libs');
      mkdirSync(libs);
      for (const [stub, soname] of [
        ['libcuda.so', 'libcuda.so.1'],
        ['libcublas.so', 'libcublas.so.13'],
        ['libcublasLt.so', 'libcublasLt.so.13'],
        ['libcurand.so', 'libcurand.so.10'],
      ])
        symlinkSync(join(STUBS, stub), join(libs, soname));
      const code = `
        const { CharLM, Vocabulary } = await import(${JSON.stringify(pathToFileURL(DIST).href)});
        const warnings = [];
        process.on('warning', (w) => warnings.push(w.message));
        const vocab = Vocabulary.fromText(${JSON.stringify(TEXT)});
        let cuda = null;
        try {
          CharLM.create(vocab, { hidden: 8 }, { device: 'cuda' });
        } catch (e) {
          cuda = { name: e.name, message: e.message };
        }
        const lm = CharLM.create(vocab, { hidden: 8 }, { device: 'auto' });
        const summary = await lm.fit(${JSON.stringify(TEXT)}, { steps: 2, batchSize: 2, seqLen: 8 });
        console.log(JSON.stringify({ cuda, device: lm.backend.device, warnings, loss: summary.trainLoss }));`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
        encoding: 'utf8',
        env: { ...process.env, ARFLOW_NATIVE_CUDA: REAL_CUDA_BUILD, LD_LIBRARY_PATH: libs },
      });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
      expect(out.cuda.name).toBe('BackendError');
      expect(out.cuda.message).toMatch(
        /^device cuda is not available: the CUDA build loaded but failed \(device cuda: /,
      );
      expect(out.cuda.message).toContain('CUDA_ERROR_STUB_LIBRARY');
      expect(out.cuda.message).toContain("use device 'cpu'");
      expect(out.device).toBe('cpu');
      expect(out.warnings).toHaveLength(1);
      expect(out.warnings[0]).toMatch(
        /^arflow: device 'auto' is using the CPU build: the CUDA build loaded but failed/,
      );
      expect(Number.isFinite(out.loss)).toBe(true);
    },
  );
});

describe("device 'auto' and 'cpu'", () => {
  it("'auto' without a loadable CUDA build trains on the CPU after one warning saying why", async () => {
    process.env.ARFLOW_NATIVE_CUDA = notALibrary('auto-cuda.node');
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const lm = create('auto');
    const again = create('auto');
    expect(warn).toHaveBeenCalledTimes(1);
    const [message, options] = warn.mock.calls[0] as [string, { code: string }];
    expect(message).toMatch(/^arflow: device 'auto' is using the CPU build: the CUDA build .* cannot load here/);
    expect(message).toContain('auto-cuda.node: it is not a loadable native addon');
    expect(message).not.toContain('\n');
    expect(options.code).toBe('ARFLOW_CUDA_UNAVAILABLE');
    expect((lm.backend as unknown as { device: string }).device).toBe('cpu');
    expect((again.backend as unknown as { device: string }).device).toBe('cpu');
    const summary = await lm.fit(TEXT, { steps: 3, batchSize: 2, seqLen: 8 });
    expect(summary.steps).toBe(3);
    expect(Number.isFinite(summary.trainLoss)).toBe(true);
  });

  it("'cpu' and no device at all never look for the CUDA build", async () => {
    // Set to a file that would be test-loaded (and fail) if anything looked at it.
    process.env.ARFLOW_NATIVE_CUDA = notALibrary('never-cuda.node');
    const warn = vi.spyOn(process, 'emitWarning');
    for (const device of ['cpu', undefined] as const) {
      const lm = create(device);
      expect((lm.backend as unknown as { device: string }).device).toBe('cpu');
      await lm.fit(TEXT, { steps: 2, batchSize: 2, seqLen: 8 });
      lm.sample({ length: 10, seed: 1 });
    }
    expect(spawned).not.toHaveBeenCalled();
    expect(warn).not.toHaveBeenCalled();
  });

  it("an unknown device is a ConfigError naming 'auto' among the choices, before any addon is looked for", () => {
    const e = thrown(() => create('gpu' as 'cpu'));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe('unknown device "gpu": expected cpu, cuda, cuda:N or auto');
    expect(spawned).not.toHaveBeenCalled();
  });

  it("the TypeScript backend takes 'auto' as the CPU and refuses 'cuda'", () => {
    const vocab = Vocabulary.fromText(TEXT);
    expect(CharLM.create(vocab, { hidden: 8 }, { backend: 'js', device: 'auto' }).backend.kind).toBe('js');
    expect(() => CharLM.create(vocab, { hidden: 8 }, { backend: 'js', device: 'cuda' })).toThrow(ConfigError);
    expect(spawned).not.toHaveBeenCalled();
  });
});

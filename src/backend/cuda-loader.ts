/**
 * Finds and loads the CUDA build of the native addon: a binary of its own, never the CPU one, because it
 * links the NVIDIA driver (libcuda.so.1) and CUDA 13's cuBLAS and cuRAND when it loads, and most machines
 * have neither. Candidates, in order:
 *   1. `ARFLOW_NATIVE_CUDA` (a path to a `.node` file; when set, the only one tried),
 *   2. `arflow.<platform>-cuda.node` in the package root (built by `npm run build:native:cuda`),
 *   3. the package `@arflow/binding-<platform>-cuda` (installed by hand: no optional dependency names it).
 * A candidate is test-loaded in a child process before this process loads it: a missing library, or a
 * crash or hang while a CUDA library initialises, then costs the child, not the caller, and a library
 * loaded here can never be unloaded. Why a candidate failed is read off the child's error and said in
 * words a user can act on. Only a device other than 'cpu' ever gets here.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import type { NativeAddon } from './native.js';

/** The CUDA build's libraries (its NEEDED entries and what libcublas needs): the child names those missing. */
const CUDA_LIBRARIES = ['libcuda.so.1', 'libcublas.so.13', 'libcublasLt.so.13', 'libcurand.so.10'];
/** Cold, cuBLAS alone takes seconds to map; a hang would take forever. */
const TEST_LOAD_TIMEOUT_MS = 60_000;
const MISSING = /(lib[\w.+-]+\.so[.\d]*): cannot open shared object file/;

/**
 * The child: loads the addon and prints its buildInfo(), or prints why it did not load and, when a
 * shared library was missing, every one of the CUDA libraries that is (dlopen names only the first).
 * process.dlopen, not require: whatever the file is called, it is loaded as a library, never run as code.
 */
const TEST_LOAD = `
const missing = ${MISSING};
try {
  const addon = { exports: {} };
  process.dlopen(addon, process.argv[1]);
  process.stdout.write(JSON.stringify(addon.exports.buildInfo()));
} catch (e) {
  const libs = [];
  if (missing.test(e.message)) {
    for (const lib of ${JSON.stringify(CUDA_LIBRARIES)}) {
      try {
        process.dlopen({ exports: {} }, lib);
      } catch (d) {
        const m = missing.exec(d.message);
        if (m && !libs.includes(m[1])) libs.push(m[1]);
      }
    }
  }
  process.stderr.write('\\n' + JSON.stringify({ message: e.message, missing: libs }));
  process.exit(3);
}`;

let loaded: NativeAddon | null = null;
/** Why no candidate loaded, by candidate list: each failure is tested once per process. */
const failures = new Map<string, string>();

/**
 * The CUDA build of the addon, loaded once, or why it cannot load here (a sentence saying what is
 * missing and how to get it).
 */
export function loadCudaNative(plat: string, root: string): { addon: NativeAddon } | { reason: string } {
  if (loaded) return { addon: loaded };
  const pkg = `@arflow/binding-${plat}-cuda`;
  const paths = candidates(plat, root, pkg);
  const key = paths.join('\0');
  const known = failures.get(key);
  if (known) return { reason: known };
  const found = paths.filter((p) => existsSync(p));
  const why: string[] = [];
  for (const path of found) {
    const addon = tryLoad(path);
    if (typeof addon !== 'string') {
      loaded = addon;
      return { addon };
    }
    why.push(`${path}: ${addon}`);
  }
  const howToGet = `build it in a clone of arflow with \`npm run build:native:cuda\`, or install ${pkg}`;
  const env = process.env.ARFLOW_NATIVE_CUDA;
  const reason = why.length
    ? `the CUDA build of the arflow addon cannot load here (${why.join('; ')})`
    : env
      ? `ARFLOW_NATIVE_CUDA is ${env}, which does not exist: ${howToGet}`
      : `no CUDA build of the arflow addon was found (tried ${paths.join(', ')}, ${pkg}): ${howToGet}`;
  failures.set(key, reason);
  return { reason };
}

/** ARFLOW_NATIVE_CUDA alone when set; else the package root's binary and the platform package's. */
function candidates(plat: string, root: string, pkg: string): string[] {
  const env = process.env.ARFLOW_NATIVE_CUDA;
  if (env) return [resolve(env)];
  const out = [`${root}arflow.${plat}-cuda.node`];
  try {
    out.push(createRequire(import.meta.url).resolve(pkg));
  } catch {
    // not installed
  }
  return out;
}

/** The addon at `path` if a child loads it and it was built with CUDA; else why not. */
function tryLoad(path: string): NativeAddon | string {
  const r = spawnSync(process.execPath, ['-e', TEST_LOAD, '--', path], {
    encoding: 'utf8',
    timeout: TEST_LOAD_TIMEOUT_MS,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT')
      return `loading it did not finish in ${TEST_LOAD_TIMEOUT_MS / 1000} s (a CUDA library hung while initialising)`;
    return `the test load could not run (${r.error.message})`;
  }
  if (r.signal) return `loading it crashed the test process (${r.signal}): a CUDA library failed while initialising`;
  if (r.status !== 0) {
    const report = childReport(r.stderr);
    return report ? explain(report) : oneLine(r.stderr) || `the test load exited with status ${r.status}`;
  }
  let info: { cuda?: unknown };
  try {
    // The last line: a --require'd module (NODE_OPTIONS) may have printed before it.
    info = JSON.parse(r.stdout.trimEnd().split('\n').pop() ?? '') as { cuda?: unknown };
  } catch {
    return `it is not an arflow addon (loading it printed no build info: ${oneLine(r.stdout)})`;
  }
  if (info.cuda !== true) return 'it is not a CUDA build (its buildInfo().cuda is false)';
  try {
    const addon = { exports: {} as NativeAddon };
    process.dlopen(addon, path);
    return addon.exports;
  } catch (e) {
    return explain({ message: (e as Error).message, missing: [] });
  }
}

interface LoadFailure {
  message: string;
  /** The CUDA libraries the loader could not find. */
  missing: string[];
}

/** The child's report, its last line of stderr (warnings from NODE_OPTIONS and the like may precede it). */
function childReport(stderr: string): LoadFailure | null {
  try {
    const report = JSON.parse(stderr.trimEnd().split('\n').pop() ?? '') as LoadFailure;
    return typeof report.message === 'string' && Array.isArray(report.missing) ? report : null;
  } catch {
    return null;
  }
}

/** A failed load as what is missing and what to do about it. */
function explain({ message, missing }: LoadFailure): string {
  const first = MISSING.exec(message)?.[1];
  const libs = missing.length ? missing : first ? [first] : [];
  if (!libs.length) {
    return /invalid ELF header|file too short|wrong ELF class|not a dynamic/.test(message)
      ? `it is not a loadable native addon (${oneLine(message)})`
      : oneLine(message);
  }
  const driver = libs.filter((l) => l.startsWith('libcuda.'));
  const blas = libs.filter((l) => /^lib(cublas|curand)/.test(l));
  const other = libs.filter((l) => !driver.includes(l) && !blas.includes(l));
  const parts: string[] = [];
  if (driver.length) parts.push(`the NVIDIA driver (${driver.join(', ')}) is not installed or not on the library path`);
  if (blas.length)
    parts.push(
      `the CUDA 13 cuBLAS/cuRAND libraries (${blas.join(', ')}) are not found: install them ` +
        '(e.g. `pip install nvidia-cublas nvidia-curand`, or the CUDA 13 toolkit) and put their lib folder ' +
        '(with pip, site-packages/nvidia/cu13/lib) on LD_LIBRARY_PATH before starting node',
    );
  if (other.length) parts.push(`a library it links is missing (${other.join(', ')})`);
  return parts.join('; and ');
}

function oneLine(s: string): string {
  return s.trim().replace(/\s+/g, ' ').slice(0, 500);
}

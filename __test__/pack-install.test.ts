/**
 * The release as a user gets it. `scripts/pack.mjs` (what `npm run pack` runs; here on the dist/ and the
 * addon `npm run build` made) packs arflow and @arflow/binding-<platform>; both tarballs are installed
 * into an empty project with cargo and rustc hidden from PATH and no network — a network namespace of
 * its own where `unshare -n` works, else proxies at a closed port — and npm `--offline`, so every
 * package comes from npm's cache. Then arflow is imported (ESM) and required (CJS, Node's require(esm)),
 * trains a char LM and a 2-D flow for a few steps and samples, and its CLI runs through npx. A second
 * install from the same tarballs must take seconds (no compile), and without a prebuilt binary the
 * install and the loader must name the platform and both ways out.
 *
 * The project's package.json depends on arflow alone, as a user's does, and it gets a lock file: arflow
 * and its optional @arflow/binding-<platform> resolved to the tarballs, the rest the runtime entries of
 * this repo's package-lock.json. npm 11 resolves a range like `^0.2.3` from full registry metadata,
 * which the repo's own `npm install` (from its lock file) never fetches, so an offline install with no
 * lock file would have nothing to resolve with; with one, npm takes the packages the repo's install left
 * in the cache, as `npm ci` would.
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativePlatform } from '../src/backend/native.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const PKG = readJson(join(ROOT, 'package.json'));
const PLATFORM = nativePlatform();
const BINDING = `@arflow/binding-${PLATFORM}`;
/** Only where this machine's platform is one of the napi targets (npm/<platform>/) is there a tarball to test. */
const TARGET = existsSync(join(ROOT, 'npm', PLATFORM, 'package.json'));
/** Node ≥ 20.19 / 22.12 loads ES modules with require(); older ones cannot require arflow. */
const REQUIRE_ESM = Boolean((process.features as { require_module?: boolean }).require_module);

let work = '';
let rootTgz = '';
let bindingTgz = '';
let cudaTgz = '';
let env: NodeJS.ProcessEnv = {};
let isolate: string[] = [];

/** The environment of a user's shell: no npm_* or arflow settings from this test run, cargo and rustc hidden. */
function userEnv(stubs: string): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  const keep = new Set(['npm_config_cache', 'npm_config_userconfig', 'npm_config_globalconfig']);
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|arflow_|vitest|node_env$|node_options$|test$)/i.test(k) && !keep.has(k)) continue;
    out[k] = v;
  }
  // Directories holding cargo or rustc leave PATH; where one also holds node (a system bin directory),
  // stubs that exit 127 shadow them.
  const hasRust = (d: string) => existsSync(join(d, 'cargo')) || existsSync(join(d, 'rustc'));
  const keepDir = (d: string) => !hasRust(d) || existsSync(join(d, 'node'));
  mkdirSync(stubs, { recursive: true });
  for (const tool of ['cargo', 'rustc', 'rustup']) {
    writeFileSync(join(stubs, tool), `#!/bin/sh\necho "${tool}: hidden by the pack-install test" >&2\nexit 127\n`);
    chmodSync(join(stubs, tool), 0o755);
  }
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((d) => d && keepDir(d));
  out.PATH = [stubs, ...dirs].join(delimiter);
  out.npm_config_offline = 'true';
  out.npm_config_audit = 'false';
  out.npm_config_fund = 'false';
  out.npm_config_update_notifier = 'false';
  for (const k of ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY']) out[k] = 'http://127.0.0.1:9';
  delete out.no_proxy;
  delete out.NO_PROXY;
  return out;
}

/** Runs `cmd args` in `cwd` as the user, without network; fails the test with its output when it fails. */
function sh(
  cwd: string,
  cmd: string,
  args: string[],
  timeoutMs = 120_000,
  allowFail = false,
): SpawnSyncReturns<string> {
  const [bin, ...rest] = [...isolate, cmd, ...args];
  const r = spawnSync(bin, rest, { cwd, env, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  if (r.status !== 0 && !allowFail)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`);
  return r;
}

/**
 * An empty project depending on arflow's tarball, with a lock file: arflow, its optional binding (from
 * its tarball; left out by `withBinding: false`), and the runtime entries (not `dev`) of this repo's
 * package-lock.json at the same places.
 */
function project(name: string, withBinding: boolean): string {
  const dir = join(work, name);
  mkdirSync(dir);
  const deps: Record<string, string> = { arflow: `file:${relative(dir, rootTgz)}` };
  const packages: Record<string, unknown> = {
    'node_modules/arflow': {
      version: PKG.version,
      resolved: deps.arflow,
      hasInstallScript: true,
      license: PKG.license,
      dependencies: PKG.dependencies,
      optionalDependencies: PKG.optionalDependencies,
      bin: PKG.bin,
      engines: PKG.engines,
    },
  };
  if (withBinding) {
    const sub = readJson(join(ROOT, 'npm', PLATFORM, 'package.json'));
    const { version, cpu, os, libc, license, engines } = sub;
    packages[`node_modules/${BINDING}`] = {
      version,
      resolved: `file:${relative(dir, bindingTgz)}`,
      optional: true,
      cpu,
      os,
      libc,
      license,
      engines,
    };
  }
  const lock = readJson(join(ROOT, 'package-lock.json')) as { packages: Record<string, { dev?: boolean }> };
  for (const [path, entry] of Object.entries(lock.packages))
    if (path && !entry.dev && !path.startsWith('node_modules/@arflow/')) packages[path] = entry;
  const manifest = { name: `user-${name}`, version: '1.0.0', private: true, dependencies: deps };
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const lockfile = { ...manifest, lockfileVersion: 3, requires: true, packages: { '': manifest, ...packages } };
  writeFileSync(join(dir, 'package-lock.json'), `${JSON.stringify(lockfile, null, 2)}\n`);
  return dir;
}

/** `npm install` in a new project; returns its output and how long it took. */
function install(name: string, withBinding = true): { dir: string; log: string; seconds: number } {
  const dir = project(name, withBinding);
  const t0 = performance.now();
  const args = ['install', '--foreground-scripts', ...(withBinding ? [] : ['--omit=optional'])];
  const r = sh(dir, 'npm', args, 180_000, true);
  const seconds = (performance.now() - t0) / 1000;
  const log = r.stdout + r.stderr;
  if (r.status !== 0) {
    const hint = log.includes('ENOTCACHED')
      ? "npm's cache lacks a runtime dependency that this repo's own `npm install` would have put there " +
        '(after `npm cache clean`, run `rm -rf node_modules && npm install`)\n'
      : '';
    throw new Error(`${hint}npm ${args.join(' ')} in ${dir} exited ${r.status ?? r.signal}\n${log}`);
  }
  console.log(`pack-install: npm install (${name}) took ${seconds.toFixed(1)} s`);
  return { dir, log, seconds };
}

describe.skipIf(!TARGET)(`the packed release installs with no Rust toolchain and no network (${PLATFORM})`, () => {
  let app = '';

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'arflow-pack-'));
    const packed = spawnSync(
      process.execPath,
      [join(ROOT, 'scripts', 'pack.mjs'), '--skip-build', '--out', join(work, 'pack')],
      {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 120_000,
      },
    );
    if (packed.status !== 0) throw new Error(`scripts/pack.mjs failed:\n${packed.stdout}\n${packed.stderr}`);
    rootTgz = join(work, 'pack', `arflow-${PKG.version}.tgz`);
    bindingTgz = join(work, 'pack', `arflow-binding-${PLATFORM}-${PKG.version}.tgz`);
    // The CUDA package is packed too when its addon was built here (`npm run build:native:cuda`).
    const cudaNode = 'arflow.linux-x64-gnu-cuda.node';
    cudaTgz = [join(ROOT, cudaNode), join(ROOT, 'npm', 'linux-x64-gnu-cuda', cudaNode)].some((f) => existsSync(f))
      ? join(work, 'pack', `arflow-binding-linux-x64-gnu-cuda-${PKG.version}.tgz`)
      : '';
    expect(readdirSync(join(work, 'pack')).sort()).toEqual(
      [`arflow-${PKG.version}.tgz`, relative(join(work, 'pack'), bindingTgz)]
        .concat(cudaTgz ? [relative(join(work, 'pack'), cudaTgz)] : [])
        .sort(),
    );
    env = userEnv(join(work, 'stubs'));
    isolate = spawnSync('unshare', ['-n', 'true'], { env }).status === 0 ? ['unshare', '-n'] : [];
    console.log(`pack-install: network ${isolate.length ? 'off (own network namespace)' : 'proxied to a closed port'}`);
  }, 180_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('hides cargo and rustc', () => {
    for (const tool of ['cargo', 'rustc']) expect(sh(work, tool, ['--version'], 10_000, true).status).not.toBe(0);
  });

  it('packs the .node in the platform tarball and no target/, src/ or .node in the root one', () => {
    const list = (tgz: string) => sh(work, 'tar', ['-tzf', tgz]).stdout.split('\n').filter(Boolean);
    const main = list(rootTgz);
    expect(main).toContain('package/dist/index.js');
    expect(main).toContain('package/crates/arflow-node/Cargo.toml'); // the source build: npm rebuild arflow
    expect(main.filter((f) => /^package\/(target|src|__test__|node_modules)\//.test(f) || f.endsWith('.node'))).toEqual(
      [],
    );
    expect(list(bindingTgz)).toContain(`package/arflow.${PLATFORM}.node`);
    if (cudaTgz) expect(list(cudaTgz)).toContain('package/arflow.linux-x64-gnu-cuda.node');
  });

  it('installs the prebuilt binary from the tarballs in seconds, offline, without compiling', () => {
    const first = install('app');
    app = first.dir;
    expect(first.log).toContain(`using the prebuilt native addon ${BINDING}`);
    expect(first.log).not.toContain('building the native addon');
    expect(existsSync(join(app, 'node_modules', BINDING, `arflow.${PLATFORM}.node`))).toBe(true);
    expect(existsSync(join(app, 'node_modules', 'arflow', 'target'))).toBe(false);
    expect(first.seconds).toBeLessThan(90);
  }, 200_000);

  it('imports arflow (ESM), trains a char LM and a 2-D flow on the native backend and samples', () => {
    writeFileSync(
      join(app, 'esm.mjs'),
      `import { CharLM, MAF, Vocabulary, sample2d } from 'arflow';
const text = 'the quick brown fox jumps over the lazy dog. '.repeat(40);
const lm = CharLM.create(Vocabulary.fromText(text), { embed: 16, hidden: 32, layers: 1 }, { seed: 0 });
const fit = await lm.fit(text, { steps: 4, batchSize: 4, seqLen: 16 });
const sample = lm.sample({ prime: 'the ', length: 40, seed: 1 });
const flow = MAF.create({ dim: 2, layers: 2, hidden: 16 });
const flowFit = await flow.fit(sample2d('moons', 512, 1), { steps: 4, batchSize: 64 });
const points = Array.from(flow.sample(8, { seed: 2 }));
console.log(JSON.stringify({ backend: lm.backend.kind, steps: fit.steps, loss: fit.trainLoss, sample,
  flowSteps: flowFit.steps, flowLoss: flowFit.trainLoss, points }));
`,
    );
    const out = JSON.parse(sh(app, 'node', ['esm.mjs']).stdout.trim().split('\n').at(-1)!);
    expect(out.backend).toBe('native');
    expect(out.steps).toBe(4);
    expect(Number.isFinite(out.loss)).toBe(true);
    expect(out.sample.startsWith('the ')).toBe(true);
    expect(out.sample.length).toBeGreaterThan(4);
    expect(out.flowSteps).toBe(4);
    expect(Number.isFinite(out.flowLoss)).toBe(true);
    expect(out.points).toHaveLength(16);
    expect(out.points.every(Number.isFinite)).toBe(true);
  });

  it.skipIf(!REQUIRE_ESM)("requires arflow from CommonJS (Node's require of ES modules)", () => {
    writeFileSync(
      join(app, 'cjs.cjs'),
      `const { CharLM, Vocabulary } = require('arflow');
const text = 'abracadabra '.repeat(30);
const lm = CharLM.create(Vocabulary.fromText(text), { embed: 8, hidden: 16 }, { seed: 0 });
lm.fit(text, { steps: 2, batchSize: 2, seqLen: 8 }).then((fit) => {
  console.log(JSON.stringify({ backend: lm.backend.kind, steps: fit.steps, sample: lm.sample({ prime: 'abra', length: 20, seed: 3 }) }));
});
`,
    );
    const out = JSON.parse(sh(app, 'node', ['cjs.cjs']).stdout.trim().split('\n').at(-1)!);
    expect(out).toMatchObject({ backend: 'native', steps: 2 });
    expect(out.sample.startsWith('abra')).toBe(true);
  });

  it('runs the CLI with npx: --help and a short train char', () => {
    expect(sh(app, 'npx', ['arflow', '--help']).stdout).toContain('arflow train char');
    const r = sh(app, 'npx', [
      'arflow',
      'train',
      'char',
      '--corpus',
      'names',
      '--steps',
      '3',
      '--embed',
      '8',
      '--hidden',
      '16',
      '--batch',
      '4',
      '--seq',
      '16',
      '--val-every',
      '3',
      '--out',
      'names.safetensors',
      '--json',
    ]);
    const summary = r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .find((m) => m.type === 'summary');
    expect(summary).toMatchObject({ steps: 3 });
    expect(existsSync(join(app, 'names.safetensors'))).toBe(true);
  });

  it('installs again from the same tarballs in seconds', () => {
    const second = install('again');
    expect(second.log).toContain(`using the prebuilt native addon ${BINDING}`);
    expect(second.seconds).toBeLessThan(60);
  }, 200_000);

  it('without a prebuilt binary, the install and the loader name the platform and both ways out', () => {
    const bare = install('bare', false);
    expect(bare.log).toContain(`no prebuilt native addon for ${PLATFORM}`);
    expect(bare.log).toContain('npm rebuild arflow');
    expect(bare.log).toContain("backend: 'js'");
    writeFileSync(
      join(bare.dir, 'bare.mjs'),
      `import { CharLM, Vocabulary } from 'arflow';
const vocab = Vocabulary.fromText('ab ');
let message = '';
try { CharLM.create(vocab, { embed: 4, hidden: 8 }, { seed: 0 }); } catch (e) { message = e.name + ': ' + e.message; }
const js = CharLM.create(vocab, { embed: 4, hidden: 8 }, { seed: 0, backend: 'js' });
console.log(JSON.stringify({ message, sample: js.sample({ prime: 'a', length: 8, seed: 1 }) }));
`,
    );
    const out = JSON.parse(sh(bare.dir, 'node', ['bare.mjs']).stdout.trim().split('\n').at(-1)!);
    expect(out.message).toMatch(/^BackendError: /);
    expect(out.message).toContain(`no prebuilt binary fits this platform (${PLATFORM}`);
    expect(out.message).toContain('npm rebuild arflow');
    expect(out.message).toContain("backend: 'js'");
    expect(out.sample).toHaveLength(9);
  }, 200_000);
});

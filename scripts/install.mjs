#!/usr/bin/env node
// npm install hook: make sure a native addon for this platform exists.
//   - Installed from npm: the prebuilt @arflow/binding-<platform> optional dependency is used as is (no
//     Rust needed). Where none fits the platform, the addon is compiled from source with cargo when a
//     Rust toolchain is on PATH; otherwise the install still succeeds and says how to get one
//     (the pure-TypeScript backend, backend: 'js', works without it).
//   - In a git checkout (developing arflow) with cargo, the addon is built from source, to match crates/.
// ARFLOW_BUILD_FROM_SOURCE=1 (or ARFLOW_REBUILD=1, `npm run build:native`) always compiles from source,
// e.g. `ARFLOW_BUILD_FROM_SOURCE=1 npm rebuild arflow`; ARFLOW_SKIP_NATIVE=1 skips the native addon.
// This is the CPU addon, which never links CUDA: the CUDA one is a binary of its own, built by
// scripts/build-native-cuda.sh (`npm run build:native:cuda`) or installed as @arflow/binding-<platform>-cuda.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const libc =
  process.platform !== 'linux' ? '' : process.report.getReport().header.glibcVersionRuntime ? '-gnu' : '-musl';
const platform = `${process.platform}-${process.arch}${libc}`;
const target = join(root, `arflow.${platform}.node`);
const prebuilt = `@arflow/binding-${platform}`;
const fromSource = Boolean(process.env.ARFLOW_REBUILD || process.env.ARFLOW_BUILD_FROM_SOURCE);
const checkout = existsSync(join(root, '.git'));

if (process.env.ARFLOW_SKIP_NATIVE) {
  console.log('arflow: ARFLOW_SKIP_NATIVE set, not building the native addon');
  process.exit(0);
}
if (existsSync(target) && !fromSource) {
  console.log(`arflow: using ${target}`);
  process.exit(0);
}
const hasCargo = () => spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status === 0;
if (!fromSource && !(checkout && hasCargo())) {
  try {
    createRequire(import.meta.url).resolve(prebuilt);
    console.log(`arflow: using the prebuilt native addon ${prebuilt}`);
    process.exit(0);
  } catch {
    // no prebuilt package for this platform: build from source below
  }
}
if (!hasCargo()) {
  const why = fromSource
    ? `ARFLOW_BUILD_FROM_SOURCE is set but there is no Rust toolchain (cargo) on PATH`
    : `there is no prebuilt native addon for ${platform} (no package ${prebuilt}) and no Rust toolchain (cargo) to build one`;
  console.warn(
    `arflow: WARNING: ${why}.\n` +
      '  arflow is installed without its native backend. Either:\n' +
      '    - install Rust (https://rustup.rs), then run `npm rebuild arflow` to compile it (a few minutes), or\n' +
      "    - use the pure-TypeScript backend: pass backend: 'js' (CLI: --backend js) for the models it implements.",
  );
  process.exit(fromSource ? 1 : 0);
}
console.log(
  `arflow: building the native addon for ${platform} from source (cargo build --release -p arflow-node), a few minutes on 2 cores…`,
);
execFileSync('cargo', ['build', '--release', '-p', 'arflow-node'], { cwd: root, stdio: 'inherit' });
const ext = process.platform === 'darwin' ? 'dylib' : process.platform === 'win32' ? 'dll' : 'so';
const targetDir = resolve(root, process.env.CARGO_TARGET_DIR || 'target');
const lib = join(targetDir, 'release', `${process.platform === 'win32' ? '' : 'lib'}arflow_node.${ext}`);
const tmp = `${target}.tmp-${process.pid}`;
copyFileSync(lib, tmp);
renameSync(tmp, target);
console.log(`arflow: built ${target}`);

#!/usr/bin/env node
// npm install hook: make sure a native addon for this platform exists. A prebuilt one (the
// @arflow/binding-<platform> optional dependency, or a .node file already in the package root) is used
// as is; otherwise the addon is compiled from source with cargo. Set ARFLOW_SKIP_NATIVE=1 to skip
// (the pure-TypeScript backend still works); ARFLOW_REBUILD=1 always rebuilds (`npm run build:native`).
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const platform = `${process.platform}-${process.arch}${process.platform === 'linux' ? '-gnu' : ''}`;
const target = join(root, `arflow.${platform}.node`);

if (process.env.ARFLOW_SKIP_NATIVE) {
  console.log('arflow: ARFLOW_SKIP_NATIVE set, not building the native addon');
  process.exit(0);
}
if (existsSync(target) && !process.env.ARFLOW_REBUILD) {
  console.log(`arflow: using ${target}`);
  process.exit(0);
}
if (!process.env.ARFLOW_REBUILD) {
  try {
    createRequire(import.meta.url).resolve(`@arflow/binding-${platform}`);
    console.log(`arflow: using prebuilt @arflow/binding-${platform}`);
    process.exit(0);
  } catch {
    // no prebuilt package: build from source below
  }
}
if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(
    `arflow: no prebuilt native addon for ${platform} and no Rust toolchain to build one.\n` +
      '  Install Rust (https://rustup.rs) and run `npm rebuild arflow`, or set ARFLOW_SKIP_NATIVE=1 to use\n' +
      "  only the pure-TypeScript backend (backend: 'js').",
  );
  process.exit(1);
}
const features = process.env.ARFLOW_CUDA ? ['--features', 'cuda'] : [];
console.log(
  `arflow: building the native addon from source (cargo build --release ${['-p', 'arflow-node', ...features].join(' ')}), a few minutes on 2 cores…`,
);
execFileSync('cargo', ['build', '--release', '-p', 'arflow-node', ...features], { cwd: root, stdio: 'inherit' });
const ext = process.platform === 'darwin' ? 'dylib' : process.platform === 'win32' ? 'dll' : 'so';
const lib = join(root, 'target', 'release', `${process.platform === 'win32' ? '' : 'lib'}arflow_node.${ext}`);
const tmp = `${target}.tmp-${process.pid}`;
copyFileSync(lib, tmp);
renameSync(tmp, target);
console.log(`arflow: built ${target}`);

#!/usr/bin/env node
// `npm run pack`: the npm release as tarballs, in the napi-rs v3 layout.
//   pack/arflow-<version>.tgz                         dist/ (ESM), the install hook, and the Rust sources
//                                                      (crates/, Cargo.toml, Cargo.lock) for a source build
//   pack/arflow-binding-<platform>-<version>.tgz      one per platform in npm/<platform>/, its prebuilt .node
//   pack/arflow-binding-linux-x64-gnu-cuda-<version>.tgz  the CUDA build (npm/linux-x64-gnu-cuda/), when its
//                                                      .node is here (`npm run build:native:cuda` makes it)
// The root package lists each @arflow/binding-<platform> as an optionalDependency at the same version;
// the CUDA package is not one (users install it next to arflow; npm never installs it by itself);
// npm installs only the one whose os/cpu/libc fit. Steps: check that the versions are in step, build the
// release addon (cargo) and the TypeScript (clean), copy the addon into npm/<platform>/ (what `napi
// artifacts` does with CI's downloaded artifacts), validate with `napi pre-publish --dry-run`, `npm pack`
// each package, and check what each tarball holds.
//
//   node scripts/pack.mjs [--skip-build] [--out DIR]   --skip-build: use dist/ and the .node as they are
//   node scripts/pack.mjs --sync                       set npm/*/package.json versions (`napi version`) and
//                                                      the optionalDependencies (package.json, its lock) to
//                                                      package.json's version (the npm `version` hook runs it)
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readNapiConfig } from '@napi-rs/cli';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const outIndex = args.indexOf('--out');
const out = resolve(outIndex >= 0 ? args[outIndex + 1] : join(root, 'pack'));
const napiBin = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');

const { targets, binaryName, packageName, packageJson } = await readNapiConfig(join(root, 'package.json'));
const version = packageJson.version;
const platforms = targets.map((t) => ({
  abi: t.platformArchABI,
  name: `${packageName}-${t.platformArchABI}`,
  dir: join(root, 'npm', t.platformArchABI),
  node: `${binaryName}.${t.platformArchABI}.node`,
}));
// The CUDA build: its own package, not a napi target (same os/cpu/libc as linux-x64-gnu, so it cannot be
// an optionalDependency beside it).
const cuda = {
  abi: 'linux-x64-gnu-cuda',
  name: `${packageName}-linux-x64-gnu-cuda`,
  dir: join(root, 'npm', 'linux-x64-gnu-cuda'),
  node: `${binaryName}.linux-x64-gnu-cuda.node`,
};

function fail(message) {
  console.error(`pack: ${message}`);
  process.exit(1);
}
function run(cmd, cmdArgs, opts = {}) {
  return execFileSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', ...opts });
}
const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'));
const writeJson = (path, value) => writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);

if (flag('--sync')) {
  run(process.execPath, [napiBin, 'version']);
  const pkgPath = join(root, 'package.json');
  const pkg = readJson(pkgPath);
  pkg.optionalDependencies = { ...pkg.optionalDependencies };
  for (const p of platforms) pkg.optionalDependencies[p.name] = version;
  writeJson(pkgPath, pkg);
  const cudaManifest = join(cuda.dir, 'package.json');
  writeJson(cudaManifest, { ...readJson(cudaManifest), version });
  const lockPath = join(root, 'package-lock.json');
  if (existsSync(lockPath)) {
    const lock = readJson(lockPath);
    if (lock.packages?.['']) lock.packages[''].optionalDependencies = pkg.optionalDependencies;
    writeJson(lockPath, lock);
  }
  console.log(`pack: npm/*/package.json and optionalDependencies are at ${version}`);
  process.exit(0);
}

// 1. Versions in step: every target has npm/<platform>/package.json with its name and the root version,
//    and the root lists it as an optionalDependency at that version (what `napi pre-publish` writes).
const optional = packageJson.optionalDependencies ?? {};
const problems = [];
for (const p of platforms) {
  const manifest = join(p.dir, 'package.json');
  if (!existsSync(manifest)) {
    problems.push(`${relative(root, manifest)} is missing (napi create-npm-dirs makes it)`);
    continue;
  }
  const sub = readJson(manifest);
  if (sub.name !== p.name) problems.push(`${relative(root, manifest)} is named ${sub.name}, not ${p.name}`);
  if (sub.version !== version) problems.push(`${p.name} is at ${sub.version}, arflow at ${version}`);
  if (optional[p.name] !== version)
    problems.push(`optionalDependencies["${p.name}"] is ${optional[p.name] ?? 'absent'}, not ${version}`);
}
for (const dep of Object.keys(optional))
  if (dep.startsWith(`${packageName}-`) && !platforms.some((p) => p.name === dep))
    problems.push(`optionalDependencies lists ${dep}, which is not a napi target`);
{
  const sub = readJson(join(cuda.dir, 'package.json'));
  if (sub.name !== cuda.name) problems.push(`npm/${cuda.abi}/package.json is named ${sub.name}, not ${cuda.name}`);
  if (sub.version !== version) problems.push(`${cuda.name} is at ${sub.version}, arflow at ${version}`);
  if (sub.main !== cuda.node || !sub.files?.includes(cuda.node))
    problems.push(`npm/${cuda.abi}/package.json must have main and files naming ${cuda.node}`);
}
if (problems.length) fail(`versions out of step:\n  ${problems.join('\n  ')}\n  run: node scripts/pack.mjs --sync`);

// 2. Build: the release addon for this machine and dist/, less the outputs of deleted sources (pruned
//    rather than wiped, so tests running from dist/ meanwhile keep working).
if (!flag('--skip-build')) {
  run('npm', ['run', 'build:native']);
  run('npm', ['run', 'build:ts']);
  const dist = join(root, 'dist');
  for (const file of readdirSync(dist, { recursive: true })) {
    const source = String(file).replace(/(\.d)?\.(js|ts)(\.map)?$/, '.ts');
    if (source !== String(file) && !existsSync(join(root, 'src', source))) rmSync(join(dist, String(file)));
  }
}
if (!existsSync(join(root, 'dist', 'index.js'))) fail('dist/index.js is missing: run `npm run build:ts`');

// 3. Artifacts: the addon built here goes into its platform package; the others come from their own
//    machines (CI puts them in npm/<platform>/, e.g. with `napi artifacts`).
const ready = [];
for (const p of platforms) {
  const built = join(root, p.node);
  const dest = join(p.dir, p.node);
  if (existsSync(built)) {
    const tmp = `${dest}.tmp-${process.pid}`;
    copyFileSync(built, tmp);
    renameSync(tmp, dest);
  }
  if (existsSync(dest)) ready.push(p);
  else console.warn(`pack: WARNING: no ${p.node} here (build it on ${p.abi}); ${p.name} is not packed`);
}
if (!ready.length) fail(`no native addon for any target: build one with \`npm run build:native\``);
{
  const built = join(root, cuda.node);
  const dest = join(cuda.dir, cuda.node);
  if (existsSync(built)) {
    const tmp = `${dest}.tmp-${process.pid}`;
    copyFileSync(built, tmp);
    renameSync(tmp, dest);
  }
  if (existsSync(dest)) ready.push(cuda);
  else console.log(`pack: no ${cuda.node} here (\`npm run build:native:cuda\` builds it); ${cuda.name} is not packed`);
}
if (platforms.every((p) => ready.includes(p))) run(process.execPath, [napiBin, 'pre-publish', '--dry-run']);

// 4. Pack, replacing older tarballs of these packages in the output folder.
mkdirSync(out, { recursive: true });
// arflow-<version>.tgz and arflow-binding-<platform>-<version>.tgz (npm's name for @arflow/binding-…)
for (const f of readdirSync(out)) if (f.startsWith('arflow-') && f.endsWith('.tgz')) rmSync(join(out, f));
function pack(dir) {
  const json = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [info] = JSON.parse(json);
  return { file: join(out, info.filename), size: info.size, paths: info.files.map((f) => f.path) };
}

// 5. Check what each tarball holds.
const main = pack(root);
const mustHave = [
  'package.json',
  'dist/index.js',
  'dist/cli/main.js',
  'scripts/install.mjs',
  'Cargo.toml',
  'Cargo.lock',
];
const missing = mustHave.filter((f) => !main.paths.includes(f));
const stray = main.paths.filter((f) => /^(target|src|__test__|node_modules|npm|pack)\//.test(f) || f.endsWith('.node'));
if (!main.paths.some((f) => f.startsWith('crates/arflow-node/src/'))) missing.push('crates/arflow-node/src/');
if (missing.length || stray.length)
  fail(
    `${main.file}: missing ${missing.join(', ') || 'nothing'}; should not hold ${stray.join(', ') || 'anything else'}`,
  );
const tarballs = [main];
for (const p of ready) {
  const sub = pack(p.dir);
  if (!sub.paths.includes(p.node)) fail(`${sub.file} does not hold ${p.node}`);
  tarballs.push(sub);
}
for (const t of tarballs)
  console.log(`pack: ${relative(process.cwd(), t.file)} (${(t.size / 1e6).toFixed(2)} MB, ${t.paths.length} files)`);

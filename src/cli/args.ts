/**
 * A small, strict argument parser: `--name value`, `--name=value` and boolean `--flag`s; checks of
 * numeric flags against their ranges, and of output paths before any work starts.
 */
import { accessSync, constants, lstatSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ArflowError, ConfigError } from '../errors.js';
import { type PngChannels, savePng } from '../io/png.js';
import { specialFileKind } from '../io/safetensors.js';

export interface FlagSpec {
  type: 'string' | 'number' | 'int' | 'boolean';
  help: string;
  choices?: readonly string[];
}

export type Flags = Record<string, string | number | boolean | undefined>;

export function parseArgs(argv: string[], spec: Record<string, FlagSpec>): { positional: string[]; flags: Flags } {
  const positional: string[] = [];
  const flags: Flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const s = spec[name];
    if (!s) {
      const near = Object.keys(spec).find((k) => k.startsWith(name.slice(0, 3)));
      throw new ConfigError(`unknown option --${name}${near ? ` (did you mean --${near}?)` : ''}; see --help`);
    }
    if (s.type === 'boolean') {
      if (eq >= 0) throw new ConfigError(`--${name} takes no value`);
      flags[name] = true;
      continue;
    }
    let raw: string | undefined;
    if (eq >= 0) raw = a.slice(eq + 1);
    else raw = argv[++i];
    if (raw === undefined) throw new ConfigError(`--${name} needs a value`);
    if (s.type === 'string') {
      if (s.choices && !s.choices.includes(raw)) {
        throw new ConfigError(`--${name} must be one of ${s.choices.join(', ')}; got ${JSON.stringify(raw)}`);
      }
      flags[name] = raw;
    } else {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v))
        throw new ConfigError(`--${name} must be a number, got ${JSON.stringify(raw)}`);
      if (s.type === 'int' && !Number.isInteger(v))
        throw new ConfigError(`--${name} must be a whole number, got ${raw}`);
      flags[name] = v;
    }
  }
  return { positional, flags };
}

export function helpText(usage: string, spec: Record<string, FlagSpec>, heading = 'Options:'): string {
  const rows = Object.entries(spec).map(([k, s]) => {
    const arg =
      s.type === 'boolean' ? '' : s.choices ? ` <${s.choices.join('|')}>` : ` <${s.type === 'string' ? 'value' : 'n'}>`;
    return [`  --${k}${arg}`, s.help];
  });
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  return `${usage ? `${usage}\n\n` : ''}${heading}\n${rows.map(([a, h]) => a.padEnd(w) + h).join('\n')}\n`;
}

/**
 * The whole-number flag `name`, if given, checked to lie in `min..max`: a ConfigError naming the flag
 * otherwise (so `--flow-steps 0` is not reported as a bad `steps`, and `--n 1e12` never reaches an
 * allocation).
 */
export function intFlag(f: Flags, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = f[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    const range = max < Number.MAX_SAFE_INTEGER ? `in ${min}..${max.toLocaleString('en-US')}` : `≥ ${min}`;
    throw new ConfigError(`--${name} must be a whole number ${range}, got ${gotText(v)}`);
  }
  return v;
}

/** A flag's value for a message: a string (not a parsed number) says that it is one. */
function gotText(v: unknown): string {
  return typeof v === 'string' ? `${JSON.stringify(v)} (a string)` : String(v);
}

/** The number flag `name`, if given, checked to be finite and > 0 (or ≥ 0 with `allowZero`). */
export function positiveFlag(f: Flags, name: string, allowZero = false): number | undefined {
  const v = f[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
    throw new ConfigError(`--${name} must be a finite number ${allowZero ? '≥' : '>'} 0, got ${gotText(v)}`);
  return v;
}

/** Whether two paths name the same file (after resolving them against the working directory). */
export function samePath(a: string, b: string): boolean {
  return resolve(a) === resolve(b);
}

/**
 * Checks, before any work, that a file can be written at `path` (given by `flag`): it does not exist
 * or is a regular file (never a directory, FIFO, device, socket or symbolic link), and its nearest
 * existing ancestor is a writable directory (not a file). ConfigError naming the path otherwise.
 * Creates nothing.
 */
export function checkOutputPath(path: string, flag: string): void {
  if (path === '') throw new ConfigError(`${flag} must not be empty`);
  const abs = resolve(path);
  const stat = (p: string) => {
    try {
      return statSync(p, { throwIfNoEntry: false });
    } catch (e) {
      // ENOTDIR: some ancestor is a file.
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw new ConfigError(`${flag} ${path}: cannot check ${p}: ${(e as Error).message}`);
    }
  };
  const special = specialFileKind(abs);
  if (special === 'a directory') throw new ConfigError(`${flag} ${path} is a directory: give a file path`);
  // A FIFO would block the write, and the rename would replace a device such as /dev/null.
  if (special !== null)
    throw new ConfigError(
      `${flag} ${path} is ${special}, not a regular file: refusing to replace it; give a file path`,
    );
  // The write renames a new file over the path: over a symbolic link, that replaces the link (say
  // /dev/stdout redirected to a file), not the file it points to. Refused; the target is named.
  let link = false;
  try {
    link = lstatSync(abs).isSymbolicLink();
  } catch {
    // missing, or some ancestor is not a directory: checked below
  }
  if (link) {
    let target: string;
    try {
      target = realpathSync(abs);
    } catch {
      target = readlinkSync(abs);
    }
    throw new ConfigError(
      `${flag} ${path} is a symbolic link to ${target}: refusing to replace the link; give the file's own path`,
    );
  }
  let dir = dirname(abs);
  for (;;) {
    const s = stat(dir);
    if (s !== undefined) {
      if (!s.isDirectory())
        throw new ConfigError(`${flag} ${path} cannot be written: ${dir} is a file, not a directory`);
      try {
        accessSync(dir, constants.W_OK);
      } catch {
        throw new ConfigError(`${flag} ${path} cannot be written: directory ${dir} is not writable`);
      }
      return;
    }
    const up = dirname(dir);
    if (up === dir) return;
    dir = up;
  }
}

/**
 * A file that could not be written at the end of a run although its path passed the checks made
 * before it (a full disk, a directory removed meanwhile…): an I/O failure, exit code 1, code E_IO.
 */
export class WriteError extends ArflowError {
  constructor(message: string) {
    super('E_IO', message);
  }
}

/**
 * {@link savePng} for the CLI: a picture that cannot be written is a {@link WriteError} (exit code 1),
 * not a usage error; the flags were checked before any work.
 */
export function savePicture(path: string, width: number, height: number, pixels: Uint8Array, channels: PngChannels) {
  try {
    savePng(path, width, height, pixels, channels);
  } catch (e) {
    if (e instanceof ConfigError) throw new WriteError(e.message);
    throw e;
  }
}

/** A numeric flag's value, or undefined when it was not given (parseArgs has checked its type). */
export const num = (f: Flags, k: string) => f[k] as number | undefined;
/** A string flag's value, or undefined when it was not given. */
export const str = (f: Flags, k: string) => f[k] as string | undefined;

/** Prints one JSON object as a line of standard output (the `--json` protocol). */
export function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** `--json` of a training command: progress lines, then a summary. */
export const JSON_FLAG: FlagSpec = {
  type: 'boolean',
  help: 'print one JSON object per line (progress, then a summary)',
};
/** `--json` of a one-shot command. */
export const JSON_RESULT_FLAG: FlagSpec = {
  type: 'boolean',
  help: 'print the result (or the error) as one JSON object',
};
export const HELP_FLAG: FlagSpec = { type: 'boolean', help: 'show this help' };

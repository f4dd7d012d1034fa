/** Running the compiled `arflow` CLI from tests, and reading its `--json` output. */
import { type ChildProcess, type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, vi } from 'vitest';
import type { ArflowError } from '../../src/errors.js';

/** The compiled CLI (`npm run build:ts` writes it). */
export const CLI = join(fileURLToPath(new URL('../../', import.meta.url)), 'dist', 'cli', 'main.js');

/** Runs `arflow ...args` in `cwd`, killed after `timeoutMs`; throws if it could not be started. */
export function runCli(cwd: string, args: string[], timeoutMs = 120_000): SpawnSyncReturns<string> {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  return r;
}

/** Every line of `stdout` parsed as JSON; a line that is not JSON fails with its number and text. */
export function jsonLines(stdout: string): Record<string, unknown>[] {
  const lines = stdout.split('\n').filter((l) => l.length > 0);
  return lines.map((l, i) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`stdout line ${i + 1} is not JSON: ${l}`);
    }
  });
}

export interface WatchedRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
}

/**
 * Starts `arflow ...args` in `cwd` and calls `onOutput(stdout so far, child)` on every chunk of its
 * standard output (to signal it, or to change the files around it mid-run); resolves when it exits.
 */
export function watchCli(
  cwd: string,
  args: string[],
  onOutput: (stdout: string, child: ChildProcess) => void,
): Promise<WatchedRun> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd });
  let stdout = '';
  child.stdout.on('data', (d) => {
    stdout += d;
    onOutput(stdout, child);
  });
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout })));
}

/** {@link watchCli} that sends one SIGINT (a Ctrl-C) once `marker` has appeared on standard output. */
export async function interruptAt(
  cwd: string,
  args: string[],
  marker: string,
): Promise<WatchedRun & { signalled: boolean }> {
  let signalled = false;
  const run = await watchCli(cwd, args, (stdout, child) => {
    if (!signalled && stdout.includes(marker)) {
      signalled = true;
      child.kill('SIGINT');
    }
  });
  return { ...run, signalled };
}

/**
 * Runs a CLI command function in-process as main.ts calls it, capturing what it writes to standard
 * output: one parsed JSON object per line (run it with --json).
 */
export async function runInProcess(cmd: () => Promise<void>): Promise<Record<string, unknown>[]> {
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  try {
    await cmd();
  } finally {
    spy.mockRestore();
  }
  return jsonLines(out);
}

/** The error `cmd` throws (it must throw), checking that `dir` holds no new file afterwards. */
export async function failsWritingNothing(dir: string, cmd: () => Promise<void>): Promise<ArflowError> {
  const before = readdirSync(dir).sort();
  let caught: unknown = null;
  await runInProcess(cmd).catch((e: unknown) => {
    caught = e;
  });
  expect(caught, 'the command did not fail').not.toBeNull();
  expect(readdirSync(dir).sort(), 'a failed command wrote a file').toEqual(before);
  return caught as ArflowError;
}

/** A small, strict argument parser: `--name value`, `--name=value` and boolean `--flag`s. */
import { ConfigError } from '../errors.js';

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

export function helpText(usage: string, spec: Record<string, FlagSpec>): string {
  const rows = Object.entries(spec).map(([k, s]) => {
    const arg =
      s.type === 'boolean' ? '' : s.choices ? ` <${s.choices.join('|')}>` : ` <${s.type === 'string' ? 'value' : 'n'}>`;
    return [`  --${k}${arg}`, s.help];
  });
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  return `${usage}\n\nOptions:\n${rows.map(([a, h]) => a.padEnd(w) + h).join('\n')}\n`;
}

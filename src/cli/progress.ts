/** A one-line progress bar on stderr when it is a terminal; periodic plain lines when it is not. */
export class ProgressBar {
  private lastPlain = 0;
  private readonly tty = Boolean(process.stderr.isTTY);
  private drawn = false;
  /** The 100% line has been printed (plain mode prints it once, not on every later update). */
  private finished = false;

  constructor(private readonly plainEverySec = 10) {}

  /** `fraction` done in [0, 1], `counter` such as "120/1000", then free text. */
  update(fraction: number, counter: string, info: string): void {
    const pct = Math.max(0, Math.min(1, fraction));
    if (this.tty) {
      const width = 24;
      const fill = Math.round(pct * width);
      const bar = `${'█'.repeat(fill)}${'░'.repeat(width - fill)}`;
      const line = `${bar} ${String(Math.round(pct * 100)).padStart(3)}% ${counter} ${info}`;
      const cols = process.stderr.columns || 120;
      process.stderr.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
      this.drawn = true;
    } else {
      const now = Date.now();
      if (now - this.lastPlain >= this.plainEverySec * 1000 || (pct >= 1 && !this.finished)) {
        this.lastPlain = now;
        this.finished = pct >= 1;
        process.stderr.write(`${counter} ${info}\n`);
      }
    }
  }

  /** Prints a full line above the bar. */
  log(line: string): void {
    if (this.drawn) process.stderr.write('\r\x1b[2K');
    process.stdout.write(`${line}\n`);
  }

  end(): void {
    if (this.drawn) process.stderr.write('\n');
    this.drawn = false;
  }
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '--:--';
  const s = Math.round(sec);
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const pad = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m % 60)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

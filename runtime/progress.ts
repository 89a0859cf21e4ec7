/**
 * A progress bar for long work (prefill of a 128K prompt, a task sweep, head training), written to stderr so it
 * never mixes with results on stdout.
 *
 *   TTY      one line redrawn in place (at most ~10 times a second):
 *            `prefill [#########.........]  4096/16384  812.3/s  ETA 0:15  loss 0.41`
 *   non-TTY  (CI logs, pipes, files) a plain line each time another 5% is done, plus a heartbeat line when
 *            `heartbeatMs` passed without one, so a slow job still shows life but a log holds ~20 lines, not
 *            thousands of carriage-return frames.
 *
 *   const bar = progress({ total: n, label: 'eval' });
 *   for (...) { ...; bar.tick(1, `acc ${acc}`); }
 *   bar.done();
 */

/** The subset of a writable stream the bar uses (process.stderr, or a fake in tests). */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Number of units of work; 0 or absent when unknown (then no bar and no ETA). */
  total?: number;
  /** Printed first on every line. */
  label?: string;
  /** Default process.stderr. */
  stream?: ProgressStream;
  /** Unit shown in the rate, e.g. 'tok' → `812.3 tok/s`. */
  unit?: string;
  /** Non-TTY: print a line at least this often while ticks arrive (default 10 s). */
  heartbeatMs?: number;
  /** Non-TTY: print a line each time this fraction more of the work is done (default 0.05). */
  step?: number;
  /** Clock in ms; injectable so tests do not sleep. */
  now?: () => number;
}

export interface ProgressBar {
  /** Adds `n` (default 1) done units; `status` replaces the free-text status shown at the end of the line. */
  tick(n?: number, status?: string): void;
  /** Changes the status text without progress. */
  status(text: string): void;
  /** Prints a message on its own line without garbling the bar (TTY: clears, prints, redraws). */
  log(message: string): void;
  /** Prints the final line (done count, elapsed time, mean rate). Idempotent. */
  done(status?: string): void;
}

/** Seconds as `m:ss` or `h:mm:ss`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function formatRate(perSecond: number, unit: string): string {
  const u = unit ? ` ${unit}/s` : '/s';
  if (!Number.isFinite(perSecond)) return `? ${u.trim()}`;
  // Slow work (a few items a minute) reads better as seconds per item.
  if (perSecond > 0 && perSecond < 0.1) return `${(1 / perSecond).toFixed(1)} s/${unit || 'it'}`;
  const digits = perSecond >= 100 ? 0 : 1;
  return `${perSecond.toFixed(digits)}${u}`;
}

export function progress(opts: ProgressOptions = {}): ProgressBar {
  const stream: ProgressStream = opts.stream ?? process.stderr;
  const total = opts.total && opts.total > 0 ? opts.total : 0;
  if (opts.total !== undefined && (!Number.isFinite(opts.total) || opts.total < 0)) {
    throw new Error(`progress: total must be a non-negative number, got ${opts.total}`);
  }
  const label = opts.label ?? '';
  const unit = opts.unit ?? '';
  const now = opts.now ?? (() => Date.now());
  const heartbeatMs = opts.heartbeatMs ?? 10_000;
  const step = opts.step ?? 0.05;
  const tty = stream.isTTY === true;

  const start = now();
  let count = 0;
  let statusText = '';
  let finished = false;
  let lastDraw = -Infinity; // TTY: time of the last redraw
  let lastLine = start; // non-TTY: time of the last printed line
  let lastStep = 0; // non-TTY: index of the last 5% step printed

  const elapsed = () => (now() - start) / 1000;

  function describe(final: boolean): string {
    const secs = elapsed();
    const rate = secs > 0 ? count / secs : NaN;
    const parts: string[] = [];
    if (label) parts.push(label);
    if (total) {
      const pct = Math.min(100, (100 * count) / total);
      if (tty && !final) parts.push(bar(count / total, barWidth()));
      parts.push(`${count}/${total}`, `${pct.toFixed(pct < 10 ? 1 : 0)}%`);
    } else {
      parts.push(String(count));
    }
    parts.push(formatRate(rate, unit));
    if (final) parts.push(`in ${formatDuration(secs)}`);
    else if (total && count > 0 && count < total) parts.push(`ETA ${formatDuration((total - count) / rate)}`);
    if (statusText) parts.push(statusText);
    return parts.join('  ');
  }

  // The bar takes what is left of the terminal after the text, between 10 and 40 cells.
  function barWidth(): number {
    const cols = stream.columns ?? 80;
    return Math.max(10, Math.min(40, cols - 60 - label.length - statusText.length));
  }

  function fit(line: string): string {
    const cols = stream.columns ?? 0;
    // A line longer than the terminal wraps and `\r` then redraws only its last row: truncate instead.
    return tty && cols > 1 && line.length >= cols ? line.slice(0, cols - 1) : line;
  }

  function draw(force: boolean): void {
    const t = now();
    if (!force && t - lastDraw < 100) return;
    lastDraw = t;
    stream.write(`\r${fit(describe(false))}\x1b[K`);
  }

  function maybeLine(): void {
    const t = now();
    const stepIndex = total ? Math.floor(count / total / step) : 0;
    if (stepIndex > lastStep || t - lastLine >= heartbeatMs) {
      lastStep = Math.max(lastStep, stepIndex);
      lastLine = t;
      stream.write(describe(false) + '\n');
    }
  }

  function update(force = false): void {
    if (finished) return;
    if (tty) draw(force);
    else maybeLine();
  }

  return {
    tick(n = 1, status?: string) {
      if (!Number.isFinite(n) || n < 0) throw new Error(`progress.tick: n must be a non-negative number, got ${n}`);
      count += n;
      if (status !== undefined) statusText = status;
      // Reaching the total always redraws, so a TTY bar never stays stuck at 99% before done().
      update(total > 0 && count >= total);
    },
    status(text: string) {
      statusText = text;
      if (tty) update();
    },
    log(message: string) {
      if (tty && !finished) {
        stream.write(`\r\x1b[K${message}\n`);
        draw(true);
      } else {
        stream.write(message + '\n');
      }
    },
    done(status?: string) {
      if (finished) return;
      if (status !== undefined) statusText = status;
      finished = true;
      const line = describe(true);
      stream.write(tty ? `\r${fit(line)}\x1b[K\n` : line + '\n');
    },
  };
}

function bar(fraction: number, width: number): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

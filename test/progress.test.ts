import { describe, expect, it } from 'vitest';
import { formatDuration, progress, type ProgressStream } from '../runtime/progress.js';

function fakeStream(isTTY: boolean, columns = 120): ProgressStream & { out: string } {
  return {
    out: '',
    isTTY,
    columns,
    write(chunk: string) {
      this.out += chunk;
      return true;
    },
  };
}

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('progress (non-TTY)', () => {
  it('prints about one line per 5% however many ticks, then a final line', () => {
    const s = fakeStream(false);
    const c = clock();
    const bar = progress({ total: 10_000, label: 'eval', stream: s, now: c.now });
    for (let i = 0; i < 10_000; i++) {
      c.advance(1);
      bar.tick(1, `acc ${i}`);
    }
    bar.done();
    expect(s.out).not.toContain('\r');
    expect(s.out).not.toContain('\x1b');
    const lines = s.out.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(20);
    expect(lines.length).toBeLessThanOrEqual(22);
    expect(lines[0]).toMatch(/^eval {2}500\/10000 {2}5\.0% {2}\d+\/s {2}ETA \d+:\d\d {2}acc 499$/);
    const last = lines[lines.length - 1]!;
    expect(last).toContain('10000/10000');
    expect(last).toContain('100%');
    expect(last).toMatch(/in 0:10/);
    expect(last).toContain('acc 9999');
  });

  it('prints a heartbeat line when progress is slow', () => {
    const s = fakeStream(false);
    const c = clock();
    const bar = progress({ total: 1000, stream: s, now: c.now, heartbeatMs: 10_000 });
    for (let i = 0; i < 5; i++) {
      c.advance(11_000);
      bar.tick(1);
    }
    expect(s.out.trimEnd().split('\n')).toHaveLength(5);
    expect(s.out).toContain('5/1000');
    expect(s.out).toMatch(/11\.0 s\/it/);
  });

  it('done is idempotent and shows elapsed time; unknown total shows count and rate', () => {
    const s = fakeStream(false);
    const c = clock();
    const bar = progress({ label: 'decode', unit: 'tok', stream: s, now: c.now });
    c.advance(2000);
    bar.tick(50);
    bar.done('ok');
    bar.done();
    const lines = s.out.trimEnd().split('\n');
    expect(lines[lines.length - 1]).toBe('decode  50  25.0 tok/s  in 0:02  ok');
    expect(s.out.match(/in 0:02/g)).toHaveLength(1);
  });

  it('rejects bad ticks', () => {
    const bar = progress({ total: 10, stream: fakeStream(false) });
    expect(() => bar.tick(-1)).toThrow(/non-negative/);
    expect(() => progress({ total: -3, stream: fakeStream(false) })).toThrow(/total/);
  });
});

describe('progress (TTY)', () => {
  it('redraws one line, throttled, with bar, ETA and status; done ends the line', () => {
    const s = fakeStream(true);
    const c = clock();
    const bar = progress({ total: 1000, label: 'train', stream: s, now: c.now });
    for (let i = 0; i < 1000; i++) {
      c.advance(1);
      bar.tick(1, 'loss 0.41');
    }
    const frames = s.out.split('\r').filter(Boolean);
    // 1 s of ticks at <= 10 redraws a second, plus the forced redraw at 100%.
    expect(frames.length).toBeLessThanOrEqual(12);
    expect(frames[0]).toMatch(/^train {2}\[#*\.*\] {2}1\/1000 .*ETA \d+:\d\d {2}loss 0\.41\x1b\[K$/);
    bar.log('checkpoint saved');
    expect(s.out).toContain('\r\x1b[Kcheckpoint saved\n');
    bar.done();
    expect(s.out.endsWith('\x1b[K\n')).toBe(true);
    expect(s.out).not.toMatch(/\n(?!$)[^\r]/); // every line after a newline starts with a redraw
  });

  it('truncates to the terminal width', () => {
    const s = fakeStream(true, 40);
    const bar = progress({ total: 10, label: 'x', stream: s });
    bar.tick(1, 'a very long status text that would wrap the terminal line');
    const frame = s.out.split('\r')[1]!.replace('\x1b[K', '');
    expect(frame.length).toBeLessThan(40);
  });
});

describe('formatDuration', () => {
  it('formats m:ss and h:mm:ss', () => {
    expect(formatDuration(5)).toBe('0:05');
    expect(formatDuration(125)).toBe('2:05');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(NaN)).toBe('?');
  });
});

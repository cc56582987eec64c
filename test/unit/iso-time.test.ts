import { describe, expect, it } from 'vitest';
import { isoTime } from '../../agent/src/iso-time.js';

describe('isoTime: toISOString\'s text, the second\'s part made once', () => {
  it('the same text as toISOString, in order, out of order, at every millisecond of a second and across seconds', () => {
    const base = Date.UTC(2026, 11, 3, 6, 42, 37);
    const times = [base, base + 1, base + 999, base + 1000, base - 1, base + 500, base + 500, base + 86_400_000, base];
    for (let i = 0; i < 3000; i++) times.push(base + i);
    for (const t of times) expect(isoTime(t)).toBe(new Date(t).toISOString());
  });

  it('years before 1970, before 0 and after 9999, and times with a fraction (truncated, as a Date does)', () => {
    for (const t of [0, -1, -999, -1000, -1001, -1.5, 1.7, 999.999, -62198755200000, -62198755200001, 253402300800000, 253402300799999, 8.64e15, -8.64e15]) {
      expect(isoTime(t)).toBe(new Date(t).toISOString());
    }
  });

  it('an invalid time throws as toISOString does', () => {
    for (const t of [NaN, Infinity, 8.64e15 + 1]) expect(() => isoTime(t)).toThrow(RangeError);
    expect(isoTime(5)).toBe('1970-01-01T00:00:00.005Z'); // and the next time is right
  });
});

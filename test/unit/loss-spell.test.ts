/**
 * A loss said once when it starts and once when it ends, with its count and its two readings, however
 * long it lasts. Timers are faked (setTimeout only).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LossSpell } from '../../agent/src/loss-spell.js';

describe('LossSpell', () => {
  afterEach(() => vi.useRealTimers());

  const spell = () => {
    const said: string[] = [];
    const s = new LossSpell({
      quietMs: 10_000,
      began: () => said.push('began'),
      ended: (lost, from, to, stopped) => said.push(`ended ${lost} ${from}-${to}${stopped ? ' stopped' : ''}`),
    });
    return { s, said };
  };

  it('one began at the first growth, one ended with the sum once quiet for quietMs; then a new spell', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { s, said } = spell();
    s.grew(0, 0, 1000); // no growth: nothing
    expect(said).toEqual([]);
    s.grew(5, 1000, 2000);
    s.grew(3, 2000, 3000);
    vi.advanceTimersByTime(9_999); // quiet counts from the last growth
    s.grew(2, 3000, 4000);
    expect(said).toEqual(['began']);
    vi.advanceTimersByTime(9_999);
    expect(said).toEqual(['began']);
    vi.advanceTimersByTime(1);
    expect(said).toEqual(['began', 'ended 10 1000-4000']);
    s.grew(1, 20_000, 21_000);
    s.end();
    expect(said).toEqual(['began', 'ended 10 1000-4000', 'began', 'ended 1 20000-21000 stopped']);
    s.end(); // nothing under way: nothing said
    vi.advanceTimersByTime(20_000);
    expect(said).toHaveLength(4);
    expect(vi.getTimerCount()).toBe(0);
  });
});

import { describe, it, expect } from 'vitest';
import { TcpStream, seqDiff } from '../../agent/src/wire/tcp-stream.js';

interface Rec { events: string[]; data(): string }

function make(maxOutOfOrderSegments = 8, maxBufferedBytes = 1 << 20): { s: TcpStream; r: Rec } {
  const events: string[] = [];
  const s = new TcpStream({
    onData: (b) => events.push(`d:${b.toString('latin1')}`),
    onGap: () => events.push('GAP'),
  }, { maxOutOfOrderSegments, maxBufferedBytes });
  return { s, r: { events, data: () => events.filter((e) => e.startsWith('d:')).map((e) => e.slice(2)).join('') } };
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('seqDiff', () => {
  it('is the signed distance in 32-bit sequence space', () => {
    expect(seqDiff(10, 3)).toBe(7);
    expect(seqDiff(3, 10)).toBe(-7);
    expect(seqDiff(5, 0xfffffffb)).toBe(10);
    expect(seqDiff(0xfffffffb, 5)).toBe(-10);
    expect(seqDiff(0, 0)).toBe(0);
  });
});

describe('TcpStream', () => {
  it('delivers in-order data after the SYN at isn + 1', () => {
    const { s, r } = make();
    s.onSyn(1000);
    s.onSegment(1001, b('abc'));
    s.onSegment(1004, b('def'));
    expect(r.events).toEqual(['d:abc', 'd:def']);
  });

  it('a segment before the expected start (SYN known) is trimmed, not delivered twice', () => {
    const { s, r } = make();
    s.onSyn(99);
    s.onSegment(100, b('hello'));
    s.onSegment(100, b('hello'));
    s.onSegment(103, b('loWORLD'));
    expect(r.data()).toBe('helloWORLD');
    expect(s.duplicateBytes).toBe(5 + 2);
  });

  it('a later SYN does not move the start once known', () => {
    const { s, r } = make();
    s.onSyn(0);
    s.onSyn(5000);
    s.onSegment(1, b('x'));
    expect(r.data()).toBe('x');
  });

  it('picked up mid-stream: the first data segment fixes the start', () => {
    const { s, r } = make();
    s.onSegment(777, b('mid'));
    s.onSegment(780, b('dle'));
    expect(r.data()).toBe('middle');
  });

  it('empty segments are ignored entirely (and do not fix the start)', () => {
    const { s, r } = make();
    s.onSegment(5, Buffer.alloc(0));
    s.onSegment(100, b('a'));
    expect(r.events).toEqual(['d:a']);
  });

  it('retransmissions and duplicates are delivered once', () => {
    const { s, r } = make();
    s.onSyn(0);
    for (const seg of ['ab', 'ab', 'cd', 'ab', 'cd', 'ef', 'ef']) {
      const off = 'abcdef'.indexOf(seg);
      s.onSegment(1 + off, b(seg));
    }
    expect(r.data()).toBe('abcdef');
    expect(s.duplicateBytes).toBe(2 + 2 + 2 + 2);
  });

  it('a larger retransmission covering delivered and new bytes delivers only the new part', () => {
    const { s, r } = make();
    s.onSyn(0);
    s.onSegment(1, b('abc'));
    s.onSegment(1, b('abcdefg'));
    expect(r.events).toEqual(['d:abc', 'd:defg']);
  });

  it('holds out-of-order segments and drains when the gap fills', () => {
    const { s, r } = make();
    s.onSyn(0);
    s.onSegment(7, b('ghi'));
    s.onSegment(4, b('def'));
    expect(r.events).toEqual([]);
    s.onSegment(1, b('abc'));
    expect(r.data()).toBe('abcdefghi');
    expect(r.events).not.toContain('GAP');
  });

  it('overlapping held segments are trimmed when drained', () => {
    const { s, r } = make();
    s.onSyn(0);
    s.onSegment(3, b('cdef')); // 3..6
    s.onSegment(5, b('efgh')); // 5..8, overlaps
    s.onSegment(4, b('de')); // wholly inside
    s.onSegment(1, b('ab'));
    expect(r.data()).toBe('abcdefgh');
  });

  it('a longer copy of a held segment replaces the shorter one; a shorter copy is a duplicate', () => {
    const { s, r } = make();
    s.onSyn(0);
    s.onSegment(3, b('cd'));
    s.onSegment(3, b('cdef'));
    s.onSegment(3, b('c'));
    s.onSegment(1, b('ab'));
    expect(r.data()).toBe('abcdef');
  });

  it('gives up on a gap after too many out-of-order segments, reports it, and continues', () => {
    const { s, r } = make(3);
    s.onSyn(0);
    s.onSegment(1, b('a'));
    // byte 2 ("b") is lost
    s.onSegment(3, b('c'));
    s.onSegment(4, b('d'));
    s.onSegment(5, b('e'));
    expect(r.events).toEqual(['d:a']);
    s.onSegment(6, b('f')); // fourth held segment: over the limit of 3
    expect(r.events).toEqual(['d:a', 'GAP', 'd:c', 'd:d', 'd:e', 'd:f']);
    expect(s.gaps).toBe(1);
    s.onSegment(7, b('g'));
    expect(r.data()).toBe('acdefg');
    // The late "b" is now old data.
    s.onSegment(2, b('b'));
    expect(r.data()).toBe('acdefg');
  });

  it('gives up on a gap when the held bytes exceed the byte bound', () => {
    const { s, r } = make(100, 10);
    s.onSyn(0);
    s.onSegment(11, b('123456'));
    expect(r.events).toEqual([]);
    s.onSegment(20, b('ABCDEF')); // 12 held bytes > 10
    expect(r.events[0]).toBe('GAP');
    expect(r.data()).toBe('123456');
    expect(s.gaps).toBe(1);
    // the gap between 17 and 20 is still open, "ABCDEF" was left waiting
    s.onSegment(17, b('xyz'));
    expect(r.data()).toBe('123456xyzABCDEF');
  });

  it('after a gap, skips to the lowest held segment even when it lies across the wrap', () => {
    const { s, r } = make(2);
    s.onSyn(0xfffffff0);
    s.onSegment(0xfffffff1, b('0'));
    s.onSegment(0xfffffffe, b('LOW'));
    s.onSegment(0x00000005, b('HIGH'));
    expect(r.events).toEqual(['d:0']);
    s.onSegment(0x00000010, b('MORE'));
    expect(r.events.slice(0, 3)).toEqual(['d:0', 'GAP', 'd:LOW']);
  });

  it('handles sequence wraparound at 2^32 in order', () => {
    const { s, r } = make();
    s.onSyn(0xfffffffd);
    s.onSegment(0xfffffffe, b('ab')); // 0xfffffffe, 0xffffffff
    s.onSegment(0x00000000, b('cd'));
    s.onSegment(0x00000002, b('ef'));
    expect(r.data()).toBe('abcdef');
  });

  it('SYN at 0xffffffff starts data at 0', () => {
    const { s, r } = make();
    s.onSyn(0xffffffff);
    s.onSegment(0, b('zero'));
    expect(r.data()).toBe('zero');
  });

  it('handles wraparound with out-of-order and duplicate segments', () => {
    const { s, r } = make();
    s.onSyn(0xfffffff9); // data at 0xfffffffa
    s.onSegment(0x00000002, b('IJ')); // offset 8
    s.onSegment(0xfffffffe, b('EFGH')); // offset 4, crosses the wrap
    s.onSegment(0x00000002, b('IJ'));
    s.onSegment(0xfffffffa, b('ABCD'));
    s.onSegment(0xfffffffc, b('CDEFGHIJKL'));
    expect(r.data()).toBe('ABCDEFGHIJKL');
  });

  it('old data from before the wrap is recognised as old after it', () => {
    const { s, r } = make();
    s.onSyn(0xfffffffd);
    s.onSegment(0xfffffffe, b('abcd')); // next = 2
    s.onSegment(0xffffffff, b('bc'));
    expect(r.data()).toBe('abcd');
    expect(s.duplicateBytes).toBe(2);
  });
});

describe('TcpStream: copies that disagree', () => {
  function make2(maxWindowBytes?: number) {
    const events: string[] = [];
    const s = new TcpStream({
      onData: (x) => events.push(`d:${x.toString('latin1')}`), onGap: () => events.push('GAP'),
      onConflict: (at) => events.push(`C@${at}`), onUrgent: (at) => events.push(`U@${at}`),
    }, { maxOutOfOrderSegments: 8, maxBufferedBytes: 1 << 20, maxWindowBytes });
    return { s, events };
  }

  it('a retransmission of delivered, unacknowledged bytes that differs is a conflict at its first differing byte', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(100, b('token: AAAA'));
    s.onSegment(100, b('tokex: AAAA'));
    expect(events).toEqual(['d:token: AAAA', 'C@4']);
    expect(s.conflicts).toBe(1);
  });

  it('identical retransmissions are no conflict (same segment on two interfaces)', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(100, b('hello'));
    s.onSegment(100, b('hello'));
    s.onSegment(102, b('llo world'));
    expect(events).toEqual(['d:hello', 'd: world']);
    expect(s.conflicts).toBe(0);
  });

  it('a larger retransmission whose old part differs: conflict, and only the new part is delivered', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(100, b('abc'));
    s.onSegment(100, b('aXcdef'));
    expect(events).toEqual(['d:abc', 'C@1', 'd:def']);
  });

  it('two held copies of the same out-of-order segment that differ: conflict', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(105, b('world'));
    s.onSegment(105, b('w0rld'));
    s.onSegment(100, b('hello'));
    expect(events).toEqual(['C@6', 'd:hello', 'd:world']);
  });

  it('overlapping held segments that differ are compared when they drain', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(105, b('world'));
    s.onSegment(107, b('RLD!!'));
    s.onSegment(100, b('hello'));
    expect(events).toEqual(['d:hello', 'd:world', 'C@7', 'd:!!']);
  });

  it('bytes the receiver acknowledged are no longer compared (nor held)', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(100, b('abcdef'));
    expect(s.buffered).toBe(6);
    s.onAck(103);
    expect(s.buffered).toBe(3);
    s.onSegment(100, b('XYZdef'));
    expect(events).toEqual(['d:abcdef']);
    s.onSegment(100, b('XYZdeF'));
    expect(events).toEqual(['d:abcdef', 'C@5']);
    s.onAck(106);
    expect(s.buffered).toBe(0);
  });

  it('the window of unacknowledged bytes is bounded', () => {
    const { s, events } = make2(4);
    s.onSyn(99);
    s.onSegment(100, b('abcdefgh'));
    expect(s.buffered).toBe(4);
    s.onSegment(100, b('XXXXefgX'));
    expect(events).toEqual(['d:abcdefgh', 'C@7']);
  });

  it('urgent data: reported at seq + pointer - 1 (seq with pointer 0), even on an empty segment', () => {
    const { s, events } = make2();
    s.onSyn(99);
    s.onSegment(100, b('abcdef'), 3);
    s.onSegment(106, b(''), 0);
    s.onSegment(106, b('ghi'), 10);
    expect(events).toEqual(['U@2', 'd:abcdef', 'U@6', 'U@15', 'd:ghi']);
    expect(s.urgent).toBe(3);
  });
});

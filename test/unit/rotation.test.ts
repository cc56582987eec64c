import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { planChunks, rotatedName, rotateFiles } from '../../agent/src/output/rotation.js';

describe('planChunks: where rotations fall (between lines only)', () => {
  it.each([
    // sizes, bytes already in the file, max → runs (the first goes to the current file)
    [[10, 10, 10], 0, 100, [[0, 1, 2]]],
    [[10, 10, 10], 0, 20, [[0, 1], [2]]],
    [[10, 10, 10], 0, 19, [[0], [1], [2]]],
    [[10], 95, 100, [[], [0]]], // the current file is nearly full: rotate first
    [[10], 90, 100, [[0]]], // exactly fills it
    [[150, 10], 0, 100, [[0], [1]]], // a line larger than max fills a file of its own
    [[150], 5, 100, [[], [0]]],
    [[], 500, 100, [[]]], // nothing to write: no rotation even past the size
  ])('%j in a file of %i bytes, max %i → %j', (sizes, size, max, runs) => {
    expect(planChunks(sizes, size, max)).toEqual(runs);
  });

  it('never takes a file past max unless a single line is larger', () => {
    const sizes = Array.from({ length: 500 }, (_, i) => 1 + ((i * 37) % 60));
    const runs = planChunks(sizes, 30, 100);
    expect(runs.flat()).toEqual(sizes.map((_, i) => i)); // every line once, in order
    runs.forEach((run, k) => {
      const bytes = run.reduce((s, i) => s + sizes[i], k === 0 ? 30 : 0);
      expect(bytes).toBeLessThanOrEqual(100);
    });
  });
});

describe('rotateFiles', () => {
  let dir = '';
  afterEach(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('shifts calls.jsonl → .1 → … → .N and drops the oldest; missing ones are skipped', () => {
    dir = mkdtempSync(join(tmpdir(), 'rot-'));
    const p = join(dir, 'calls.jsonl');
    expect(rotatedName(p, 0)).toBe(p);
    expect(rotatedName(p, 3)).toBe(`${p}.3`);
    writeFileSync(p, 'live');
    writeFileSync(`${p}.1`, 'one');
    writeFileSync(`${p}.3`, 'three'); // .2 missing
    rotateFiles(p, 3);
    // .3 (the oldest) dropped; .2 did not exist; .1 → .2; the live file → .1
    expect(readdirSync(dir).sort()).toEqual(['calls.jsonl.1', 'calls.jsonl.2']);
    expect(readFileSync(`${p}.1`, 'utf8')).toBe('live');
    expect(readFileSync(`${p}.2`, 'utf8')).toBe('one');
    writeFileSync(p, 'newer');
    rotateFiles(p, 3);
    rotateFiles(p, 3); // twice in a row: the live file is missing the second time
    expect(readdirSync(dir).sort()).toEqual(['calls.jsonl.2', 'calls.jsonl.3']);
    expect(readFileSync(`${p}.2`, 'utf8')).toBe('newer');
    expect(readFileSync(`${p}.3`, 'utf8')).toBe('live'); // 'one' was the oldest and is gone
  });
});

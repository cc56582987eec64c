/**
 * The lab (network namespaces, the IMDS stand-in, the tracer as a child process) is not part of the
 * agent: it lives in lab/ at the top of the repository, compiled to dist/lab, and only the demo
 * command loads it, at run time. What the demo uses of it, as types (the lab imports nothing of the
 * agent and the agent nothing of the lab; test/lab/demo.test.ts runs the two together).
 */
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from '../paths.js';

export interface TracedRecord { [k: string]: any }

export interface DemoLab {
  id: string;
  instanceNs: string;
  imdsNs: string;
  exec(ns: string, cmd: string, args: string[]): Promise<{ exitCode: number | null }>;
  spawn(ns: string, cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  startImds(): Promise<unknown>;
  destroy(): Promise<void>;
}

export interface DemoTracer {
  records: TracedRecord[];
  count(pred: (r: TracedRecord) => boolean, n: number, timeoutMs?: number, what?: string): Promise<TracedRecord[]>;
  stop(): Promise<number | null>;
}

export interface LabModules {
  labSupported(): { ok: boolean; reason?: string };
  createLab(): Promise<DemoLab>;
  startTracer(lab: DemoLab, args: string[]): Promise<DemoTracer>;
}

/** dist/lab of this installation (a checkout's build or a release), loaded now. */
export async function loadLab(root = ROOT): Promise<LabModules> {
  const mod = (name: string): string => pathToFileURL(join(root, 'dist', 'lab', name)).href;
  const netns = await import(mod('netns.js')) as Pick<LabModules, 'labSupported' | 'createLab'>;
  const traced = await import(mod('traced.js')) as Pick<LabModules, 'startTracer'>;
  return { labSupported: netns.labSupported, createLab: netns.createLab, startTracer: traced.startTracer };
}

#!/usr/bin/env -S node --max-semi-space-size=2 --max-old-space-size=128
// (V8 heap limits for an agent, not a server: DEFAULTS.agentNodeFlags in agent/src/defaults.ts.)
// Entry point of the installed command: runs the compiled CLI (npm run build makes dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(fileURLToPath(cli))) {
  process.stderr.write('imds-tracer: not built yet; run "npm ci && npm run build" in the repository first\n');
  process.exitCode = 2;
} else {
  const { main } = await import(cli.href);
  process.exitCode = await main(process.argv);
}

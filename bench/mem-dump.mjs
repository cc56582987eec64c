// Loaded into the agent with `node --import=<this file>` by rss-where.mjs: on SIGUSR2 it writes what
// node and V8 say about their memory (process.memoryUsage(), v8.getHeapStatistics(),
// v8.getHeapSpaceStatistics()) to $MEM_DUMP_DIR/mem-<pid>-<n>.json. Nothing else: no timer, no
// handle that keeps the agent alive (signal listeners are unreferenced).
import { writeFileSync } from 'node:fs';
import v8 from 'node:v8';

const dir = process.env.MEM_DUMP_DIR;
let dumps = 0;
if (dir) {
  process.on('SIGUSR2', () => {
    const dump = { memoryUsage: process.memoryUsage(), heap: v8.getHeapStatistics(), spaces: v8.getHeapSpaceStatistics() };
    writeFileSync(`${dir}/mem-${process.pid}-${dumps++}.json`, JSON.stringify(dump));
  });
}

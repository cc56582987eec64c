/**
 * Capture worker through the `cap` binding, used where native/imds_capture is not built: opens one
 * named interface and streams its frames to stdout (see framing.ts). It runs as a child process
 * because the binding aborts the whole process when its interface disappears; the agent restarts
 * the worker instead.
 * Exits 3 when the device cannot be opened (the message on stderr), and when stdin closes.
 */
import { pathToFileURL } from 'node:url';
import { openCapture } from './pcap.js';
import { encodeRecord, FRAME_OPEN, FRAME_PACKET, packetPayload } from './framing.js';

export function runWorker(device: string, filter: string, bufferBytes: number): void {
  let source;
  try {
    source = openCapture(device, filter, bufferBytes, (frame) => {
      process.stdout.write(encodeRecord(FRAME_PACKET, packetPayload(BigInt(Date.now()) * 1000n, frame)));
    });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exitCode = 3;
    return;
  }
  process.stdout.write(encodeRecord(FRAME_OPEN, Buffer.from(source.linkType)));
  const stop = (): void => { source.close(); process.exit(0); };
  process.stdin.on('end', stop).on('error', stop).resume();
  process.on('SIGTERM', stop);
  process.stdout.on('error', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [device, filter, bufferBytes] = process.argv.slice(2);
  runWorker(device, filter, Number(bufferBytes));
}

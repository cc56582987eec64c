/** The libpcap edge: opens the device with the IMDS filter and hands each frame on, copied. */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export interface PcapSource {
  linkType: string;
  close(): void | Promise<void>;
}

interface CapModule {
  Cap: new () => CapHandle;
}
interface CapHandle {
  open(device: string, filter: string, bufSize: number, buffer: Buffer): string;
  setMinBytes?(n: number): void;
  on(ev: 'packet', cb: (nbytes: number, truncated: boolean) => void): void;
  close(): void;
}

export function loadCap(): CapModule {
  try {
    return require('cap') as CapModule;
  } catch (err) {
    throw new Error(`libpcap binding (npm "cap") did not load: ${(err as Error).message}; install libpcap and run npm ci`);
  }
}

export function openCapture(device: string, filter: string, bufferBytes: number,
  onFrame: (frame: Buffer, linkType: string) => void): PcapSource {
  const { Cap } = loadCap();
  const cap = new Cap();
  const buffer = Buffer.alloc(65535);
  let linkType: string;
  try {
    linkType = cap.open(device, filter, bufferBytes, buffer);
  } catch (err) {
    throw new Error(`cannot capture on ${device}: ${(err as Error).message}`);
  }
  cap.on('packet', (nbytes) => onFrame(buffer.subarray(0, nbytes), linkType));
  return { linkType, close: () => cap.close() };
}

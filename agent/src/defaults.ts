/** Every default of the agent, in one place. */
export const DEFAULTS = {
  interface: 'any',
  logFile: '/var/log/imds-tracer/calls.jsonl',
  logDirMode: 0o700,
  logFileMode: 0o600,
  backend: 'auto' as const,
  ancestors: 4,
  /** IMDS endpoints on every EC2 instance. */
  imdsIPv4: ['169.254.169.254'],
  imdsIPv6: ['fd00:ec2::254'],
  imdsPort: 80,
  /** libpcap kernel buffer. */
  pcapBufferBytes: 16 * 1024 * 1024,
  /** How long a request waits for its response before its record is written anyway. */
  responseWaitMs: 1500,
  /** How long a request waits for attribution to finish before its record is written anyway. */
  attributionWaitMs: 3000,
  /** Bounds of the wire state (each eviction is counted in stats). */
  maxFlows: 10_000,
  maxBufferedBytesPerDirection: 64 * 1024,
  maxOutOfOrderSegments: 64,
  maxHeaderBytes: 32 * 1024,
  maxPendingCalls: 10_000,
  /** An idle TCP flow is forgotten after this long. */
  flowIdleMs: 120_000,
  /** How long a kernel connect event and a wire flow may be apart and still be joined. */
  joinWindowMs: 10_000,
  /** How long a new connection waits for its kernel event before /proc is asked instead. */
  joinWaitMs: 2000,
  /** Kernel connect events kept for joining (each eviction is counted). */
  maxPendingJoins: 10_000,
  statsIntervalMs: 60_000,
} as const;

export type Backend = 'auto' | 'ebpf' | 'proc';

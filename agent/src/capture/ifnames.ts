/** Interface index → name in the agent's network namespace, from /sys/class/net (re-read on a miss). */
import { readdirSync, readFileSync } from 'node:fs';

export class InterfaceNames {
  private names = new Map<number, string>();
  private readAt = 0;

  constructor(private readonly sysNet = '/sys/class/net') {}

  name(ifindex: number): string | null {
    if (!this.names.has(ifindex) && Date.now() - this.readAt > 1000) this.read();
    return this.names.get(ifindex) ?? null;
  }

  private read(): void {
    this.readAt = Date.now();
    const next = new Map<number, string>();
    let entries: string[] = [];
    try { entries = readdirSync(this.sysNet); } catch { /* no sysfs: names stay unknown */ }
    for (const name of entries) {
      try {
        next.set(Number(readFileSync(`${this.sysNet}/${name}/ifindex`, 'utf8').trim()), name);
      } catch { /* gone meanwhile */ }
    }
    this.names = next;
  }
}

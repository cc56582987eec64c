// Latency client, run INSIDE the lab's instance namespace: IMDSv1 GETs at a fixed rate on keep-alive
// connections, each with a unique ?lat=N, printing when each was sent (epoch ms, sub-ms).
// Bounded: exactly rate × seconds requests, and a hard exit.
// Config: {"rate":500,"seconds":30,"sockets":4}
import http from 'node:http';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const rate = Math.min(Number(cfg.rate ?? 500), 20_000);
const seconds = Math.min(Number(cfg.seconds ?? 10), 600);
const total = Math.round(rate * seconds);
const hard = setTimeout(() => { console.error('latclient: hard timeout'); process.exit(3); }, (seconds + 30) * 1000);
hard.unref();
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(cfg.sockets ?? 4) });
const now = () => performance.timeOrigin + performance.now();
const sent = new Array(total);
let done = 0; let errors = 0; let n = 0;
const t0 = now();
await new Promise((resolve) => {
  const tick = () => {
    const due = Math.min(total, Math.floor(((now() - t0) / 1000) * rate) + 1);
    while (n < due) {
      const i = n++;
      const req = http.request({ host: '169.254.169.254', port: 80, path: `/latest/meta-data/instance-id?lat=${i}`, agent, timeout: 5000 }, (res) => {
        res.resume();
        res.on('end', () => { if (++done === total) resolve(); });
      });
      req.on('error', () => { errors++; if (++done === total) resolve(); });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      sent[i] = now();
      req.end();
    }
    if (n < total) setTimeout(tick, 2);
  };
  tick();
});
agent.destroy();
// A pipe may take the line in several writes: exit once it is flushed.
process.stdout.write(`${JSON.stringify({ sent: sent.map((x) => Math.round(x * 1000) / 1000), errors })}\n`, () => process.exit(0));

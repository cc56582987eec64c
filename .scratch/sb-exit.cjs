const SonicBoom = require('sonic-boom');
const b = new SonicBoom({ fd: 1, sync: false, maxLength: 4 << 20 });
let drops = 0; b.on('drop', () => drops++);
const line = 'y'.repeat(500) + '\n';
for (let i = 0; i < 20000; i++) b.write(line);
setTimeout(() => { process.stderr.write(`drops=${drops} len=${b._len} heap=${process.memoryUsage().heapUsed>>20} rss=${process.memoryUsage().rss>>20}\n`); process.exit(0); }, 1000);

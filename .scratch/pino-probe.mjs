import pino from 'pino';
let out = [];
const dest = { write(s) { out.push(s); } };
const log = pino({ base: null, timestamp: false, formatters: { level: () => ({}) }, customLevels: { notice: 35 } }, dest);
const recs = [
 {"event":"stats","time":"2026-11-28T16:06:20.955Z","uptime_s":34,"calls":{"v1":7508,"v2":7509},"x":undefined,"n":null,"arr":[1,"a\u2028b",null],"s":"quote\" back\\ nl\n tab\t \u0001 é 😀 \ud800"},
 {"event":"imds_call","msg":"hello","level":3,"request":{"path":"/latest/../x?y=%2e","user_agent":null},"big":1e21,"neg":-0,"nan":NaN,"inf":Infinity},
 {"event":"x","toJSON":undefined,"d":new Date(0), "nested":{"a":{"b":{"c":[{"d":1}]}}}},
];
for (const r of recs) { out=[]; log.info(r); const a = out.join(''); const b = JSON.stringify(r)+'\n'; console.log(a===b, a===b?'':a+'\n'+b); }
out=[]; log.notice({event:'notice',m:1}); console.log(out);

// A stand-in "daemon" for the watchdog tests: starts a Watchdog, hands it an
// fd for each victim pid given on the command line, optionally reports some
// of them done, prints "ready" and then waits to be killed (or, with --bye,
// closes the watchdog normally and exits).
import { openSync } from 'node:fs';
import { Watchdog } from '../../plugin/integrity/watchdog.js';

const args = process.argv.slice(2);
const logFile = args[0]!;
const bye = args.includes('--bye');
const victims = args.slice(1).filter((a) => /^\d+$/.test(a)).map(Number);
const done = args.filter((a) => a.startsWith('done=')).map((a) => Number(a.slice(5)));

const w = await Watchdog.start({ logFile });
const fd = openSync('/dev/null', 'r');
for (const v of victims) await w.adopt(v, fd);
for (const d of done) await w.done(d);
process.stdout.write(`ready ${w.pid}\n`);
if (bye) {
  await w.close();
  process.stdout.write('closed\n');
} else {
  setInterval(() => {}, 1 << 30);
}

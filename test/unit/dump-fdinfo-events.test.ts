// Parsers of the fdinfo lines of event objects (texts as Linux 6.x prints
// them), the inet socket checks and CRIU's address layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseEventfdFdinfo } from '../../plugin/dump/fds/eventfd.js';
import { parseEpollFdinfo } from '../../plugin/dump/fds/eventpoll.js';
import { addrWords, inetProblem, TCP_ESTABLISHED_MESSAGE, wordsAddr } from '../../plugin/dump/fds/inet.js';
import { parseInotifyFdinfo } from '../../plugin/dump/fds/inotify.js';
import { parseSignalfdMask } from '../../plugin/dump/fds/signalfd.js';
import { parseTimerfdFdinfo } from '../../plugin/dump/fds/timerfd.js';

test('eventfd: the counter is hex, semaphore mode is seen', () => {
  assert.deepEqual(parseEventfdFdinfo('pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\neventfd-count:        100000007\neventfd-id: 14\neventfd-semaphore: 0\n'),
    { counter: 0x100000007n, semaphore: false });
  assert.deepEqual(parseEventfdFdinfo('eventfd-count:                a\neventfd-semaphore: 1\n'), { counter: 10n, semaphore: true });
  assert.throws(() => parseEventfdFdinfo('pos:\t0\n'), /eventfd-count/);
});

test('signalfd: the mask', () => {
  assert.equal(parseSignalfdMask('pos:\t0\nflags:\t04002\nsigmask:\t0000002000000800\n'), (1n << 11n) | (1n << 37n));
});

test('timerfd: clock, ticks, octal settime flags, value and interval', () => {
  assert.deepEqual(parseTimerfdFdinfo('clockid: 0\nticks: 3\nsettime flags: 01\nit_value: (999, 970404231)\nit_interval: (0, 20000000)\n'), {
    clockid: 0, ticks: 3n, settimeFlags: 1, value: [999n, 970404231n], interval: [0n, 20000000n],
  });
  assert.throws(() => parseTimerfdFdinfo('clockid: 0\n'), /ticks/);
});

test('epoll: every tfd line (events and data in hex)', () => {
  const w = parseEpollFdinfo('pos:\t0\nflags:\t02000002\ntfd:        5 events: 80000019 data:                2  pos:0 ino:40e sdev:10\ntfd:        3 events:       19 data: 1122334455667788  pos:0 ino:40e sdev:10\n');
  assert.deepEqual(w, [
    { tfd: 5, events: 0x80000019, data: 2n, pos: 0n, ino: 0x40en, sdev: 0x10 },
    { tfd: 3, events: 0x19, data: 0x1122334455667788n, pos: 0n, ino: 0x40en, sdev: 0x10 },
  ]);
});

test('inotify: watches with their file handles', () => {
  const w = parseInotifyFdinfo('inotify wd:2 ino:20c434 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:34c42000f5069f1c\n');
  assert.equal(w.length, 1);
  assert.deepEqual({ ...w[0]!, handle: w[0]!.handle.toString('hex') }, {
    wd: 2, ino: 0x20c434n, sdev: 0xfe00000, mask: 0x100, ignoredMask: 0, handleType: 1, handle: '34c42000f5069f1c',
  });
});

test('inet: addresses as CRIU stores them (network bytes read as little-endian words)', () => {
  assert.deepEqual(addrWords(Buffer.from([127, 0, 0, 1])), [0x0100007f]);
  assert.deepEqual(wordsAddr([0, 0, 0, 0x01000000]), Buffer.from('00000000000000000000000000000001', 'hex'));
});

test('inet: what is refused, with CRIU\'s words', () => {
  const tcp = { family: 2, type: 1, proto: 6 };
  assert.equal(inetProblem({ ...tcp, state: 10, acceptQueue: 0 }, { tcpEstablished: false }), undefined);
  assert.match(inetProblem({ ...tcp, state: 10, acceptQueue: 2 }, { tcpEstablished: false })!, /^In-flight connection/);
  assert.equal(inetProblem({ ...tcp, state: 1 }, { tcpEstablished: false }), TCP_ESTABLISHED_MESSAGE);
  assert.equal(inetProblem({ ...tcp, state: 1 }, { tcpEstablished: true }), undefined);
  assert.match(inetProblem({ ...tcp, state: 8 }, { tcpEstablished: true })!, /CLOSE_WAIT .* not supported/);
  assert.equal(inetProblem({ family: 10, type: 2, proto: 17, state: 7 }, { tcpEstablished: false }), undefined);
  assert.match(inetProblem({ family: 2, type: 2, proto: 17, udpCork: true }, { tcpEstablished: false })!, /corked/);
  assert.match(inetProblem({ family: 17, type: 3, proto: 0 }, { tcpEstablished: false })!, /packet sockets/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildXstate, finalRegs, findHole } from '../../plugin/restore/process.js';
import type { UserX86FpregsEntry, UserX86RegsEntry } from '../../plugin/images/index.js';

function regs(over: Partial<UserX86RegsEntry>): UserX86RegsEntry {
  const z = 0n;
  return {
    r15: z, r14: z, r13: z, r12: z, bp: z, bx: z, r11: z, r10: z, r9: z, r8: z, ax: z, cx: z, dx: z, si: z, di: z,
    orig_ax: BigInt.asUintN(64, -1n), ip: 0x401000n, cs: 0x33n, flags: 0x246n, sp: 0x7ffc0000n, ss: 0x2bn,
    fs_base: 0x7f0000001000n, gs_base: z, ds: z, es: z, fs: z, gs: z, ...over,
  };
}
const IP = 16, AX = 10, ORIG = 15, FSBASE = 21;

test('finalRegs keeps a task that was not in a syscall as it was', () => {
  const a = finalRegs(regs({ ax: 42n }));
  assert.equal(a[AX], 42n);
  assert.equal(a[IP], 0x401000n);
  assert.equal(a[FSBASE], 0x7f0000001000n);
  assert.equal(a[ORIG], BigInt.asUintN(64, -1n));
});

test('finalRegs re-executes a syscall interrupted with -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND', () => {
  for (const e of [-512n, -513n, -514n]) {
    const a = finalRegs(regs({ orig_ax: 202n, ax: BigInt.asUintN(64, e), ip: 0x7f00000010n }));
    assert.equal(a[AX], 202n, `rax for ${e}`);
    assert.equal(a[IP], 0x7f0000000en, `rip for ${e}`);
    assert.equal(a[ORIG], BigInt.asUintN(64, -1n));
  }
});

test('finalRegs turns -ERESTART_RESTARTBLOCK into EINTR (the restart block was kernel state)', () => {
  const a = finalRegs(regs({ orig_ax: 230n, ax: BigInt.asUintN(64, -516n), ip: 0x7f00000010n }));
  assert.equal(a[AX], BigInt.asUintN(64, -4n));
  assert.equal(a[IP], 0x7f00000010n);
});

test('findHole skips busy ranges and stays page aligned', () => {
  const busy = [
    { start: 0x10000000n, end: 0x10002000n },
    { start: 0x10003000n, end: 0x10005000n },
  ];
  assert.equal(findHole(busy, 0x1000n), 0x10002000n);
  assert.equal(findHole(busy, 0x2000n), 0x10005000n);
  assert.equal(findHole([], 0x4000n), 0x10000000n);
  assert.throws(() => findHole([{ start: 0n, end: 0x7ffffffff000n }], 0x1000n));
});

test('buildXstate writes the legacy area and the header on the kernel template', () => {
  const template = Buffer.alloc(832);
  template.writeBigUInt64LE(7n, 464); // XCR0 in sw_reserved
  const fp: UserX86FpregsEntry = {
    cwd: 0xc7f, swd: 0, twd: 0, fop: 0, rip: 0n, rdp: 0n, mxcsr: 0x7f80, mxcsr_mask: 0xffff,
    st_space: Array.from({ length: 32 }, (_, i) => i), xmm_space: Array.from({ length: 64 }, (_, i) => 0x1000 + i), padding: [],
    xsave: { xstate_bv: 0xffn, ymmh_space: Array.from({ length: 64 }, (_, i) => 0x2000 + i), bndreg_state: [], bndcsr_state: [], opmask_reg: [], zmm_upper: [], hi16_zmm: [], pkru: [] },
  };
  const b = buildXstate(template, fp);
  assert.equal(b.length, 832);
  assert.equal(b.readUInt16LE(0), 0xc7f); // FE_TOWARDZERO rounding survives
  assert.equal(b.readUInt32LE(24), 0x7f80);
  assert.equal(b.readUInt32LE(32 + 4 * 5), 5);
  assert.equal(b.readUInt32LE(160 + 4 * 63), 0x1000 + 63);
  assert.equal(b.readBigUInt64LE(512), 7n, 'xstate_bv is masked with XCR0');
  assert.equal(b.readBigUInt64LE(520), 0n, 'standard format');
});

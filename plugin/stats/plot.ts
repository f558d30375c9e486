// Draws the fault timeline of a stats file as SVG: time on x, address on y,
// page faults and background pushes in two colours. The address axis is
// compressed: touched addresses are grouped into bands (gaps larger than
// a threshold are cut out), each band gets height in proportion to its span
// (with a minimum), so a heap at 0x55… and libraries at 0x7f… both show.
import { PAGE } from '../images/memory.js';
import type { StatsFile, TimelineEvent } from './format.js';

const W = 960;
const H = 600;
const M = { left: 150, right: 20, top: 40, bottom: 50 };
const GAP = 64n << 20n; // split bands at gaps larger than 64 MiB
const colours = { f: '#d62728', p: '#1f77b4', z: '#7f7f7f' } as const;

interface Band { start: bigint; end: bigint; y0: number; y1: number }

function bands(spans: { start: bigint; end: bigint }[]): Band[] {
  const sorted = [...spans].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: { start: bigint; end: bigint }[] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last && s.start - last.end <= GAP) {
      if (s.end > last.end) last.end = s.end;
    } else out.push({ ...s });
  }
  const plotH = H - M.top - M.bottom;
  const sizes = out.map((b) => Number(b.end - b.start));
  const total = sizes.reduce((s, x) => s + x, 0) || 1;
  const minShare = out.length ? Math.min(0.15, 0.5 / out.length) : 0;
  const shares = sizes.map((s) => Math.max(minShare, s / total));
  const norm = shares.reduce((s, x) => s + x, 0) || 1;
  let y = H - M.bottom;
  return out.map((b, i) => {
    const h = (shares[i]! / norm) * plotH;
    const band = { ...b, y0: y, y1: y - h };
    y -= h;
    return band;
  });
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

export function plotTimeline(stats: StatsFile, opts: { pid?: number } = {}): string {
  const procs = stats.processes.filter((p) => opts.pid === undefined || p.pid === opts.pid);
  const events: (TimelineEvent & { pid?: number })[] = [];
  for (const p of procs) for (const e of p.timeline ?? []) events.push(e);
  const bs = bands(events.map((e) => ({ start: BigInt(e[1]), end: BigInt(e[1]) + BigInt(e[2]) * PAGE })));
  const tMax = Math.max(1, ...events.map((e) => e[0]));
  const x = (t: number): number => M.left + (t / tMax) * (W - M.left - M.right);
  const y = (a: bigint): number => {
    const b = bs.find((b) => a >= b.start && a < b.end) ?? bs[bs.length - 1];
    if (!b) return H - M.bottom;
    const f = Number(a - b.start) / Math.max(1, Number(b.end - b.start));
    return b.y0 + (b.y1 - b.y0) * f;
  };
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  const title = `lazy-restore fault timeline${opts.pid !== undefined ? ` (pid ${opts.pid})` : ''}: ${events.filter((e) => e[3] === 'f').length} faults, ${events.filter((e) => e[3] === 'p').length} pushes`;
  parts.push(`<text x="${M.left}" y="20" font-size="14">${esc(title)}</text>`);
  // Bands and their address labels.
  for (const b of bs) {
    parts.push(`<rect x="${M.left}" y="${b.y1.toFixed(1)}" width="${W - M.left - M.right}" height="${(b.y0 - b.y1).toFixed(1)}" fill="#f4f4f4" stroke="#ddd"/>`);
    parts.push(`<text x="${M.left - 6}" y="${(b.y0 - 2).toFixed(1)}" text-anchor="end">0x${b.start.toString(16)}</text>`);
    parts.push(`<text x="${M.left - 6}" y="${(b.y1 + 11).toFixed(1)}" text-anchor="end" fill="#888">0x${b.end.toString(16)}</text>`);
  }
  // Pushes first so faults stay visible on top.
  for (const kind of ['p', 'z', 'f'] as const) {
    const c = colours[kind];
    for (const e of events) {
      if (e[3] !== kind) continue;
      const a = BigInt(e[1]);
      const y0 = y(a);
      const y1 = y(a + BigInt(e[2]) * PAGE - 1n);
      const h = Math.max(1.5, Math.abs(y0 - y1));
      parts.push(`<rect class="mark-${kind}" x="${x(e[0]).toFixed(1)}" y="${Math.min(y0, y1).toFixed(1)}" width="2" height="${h.toFixed(1)}" fill="${c}" fill-opacity="${kind === 'f' ? 0.9 : 0.5}"/>`);
    }
  }
  // Time axis.
  const axisY = H - M.bottom;
  parts.push(`<line x1="${M.left}" y1="${axisY}" x2="${W - M.right}" y2="${axisY}" stroke="black"/>`);
  for (let i = 0; i <= 5; i++) {
    const t = (tMax * i) / 5;
    parts.push(`<line x1="${x(t).toFixed(1)}" y1="${axisY}" x2="${x(t).toFixed(1)}" y2="${axisY + 5}" stroke="black"/>`);
    parts.push(`<text x="${x(t).toFixed(1)}" y="${axisY + 18}" text-anchor="middle">${t.toFixed(t < 10 ? 1 : 0)} ms</text>`);
  }
  parts.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 10}" text-anchor="middle">time since restore (ms)</text>`);
  // Legend.
  const lx = W - M.right - 260;
  parts.push(`<rect x="${lx}" y="8" width="10" height="10" fill="${colours.f}"/><text x="${lx + 14}" y="17">page fault (served on demand)</text>`);
  parts.push(`<rect x="${lx}" y="24" width="10" height="10" fill="${colours.p}" fill-opacity="0.5"/><text x="${lx + 14}" y="33">background push</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** A plain-text summary of a stats file, one line per process plus totals. */
export function summarize(stats: StatsFile): string {
  const lines = [`${'pid'.padStart(8)} ${'faults'.padStart(8)} ${'zero'.padStart(8)} ${'pushed'.padStart(8)} ${'MiB'.padStart(8)} ${'p50 us'.padStart(8)} ${'p99 us'.padStart(8)} ${'complete ms'.padStart(12)}`];
  for (const p of stats.processes) {
    lines.push(`${String(p.pid).padStart(8)} ${String(p.faults).padStart(8)} ${String(p.zeroPages).padStart(8)} ${String(p.pushedPages).padStart(8)} ${(p.bytes / 2 ** 20).toFixed(1).padStart(8)} ${(p.latency?.p50Us ?? NaN).toFixed(1).padStart(8)} ${(p.latency?.p99Us ?? NaN).toFixed(1).padStart(8)} ${(p.timeToCompleteMs === undefined ? (p.exited ? 'exited' : '-') : p.timeToCompleteMs.toFixed(0)).padStart(12)}`);
  }
  return `${lines.join('\n')}\n`;
}

// Following a migration's destination from its output lines.

/**
 * Collects the destination's lines into `lines`; `running` resolves with the
 * pid of the restored tree once the destination reports "tree running as
 * pid N". Pass `onDestLine` to migrate().
 */
export function watchDestRunning(lines: string[]): { onDestLine: (l: string) => void; running: Promise<number> } {
  let resolve!: (pid: number) => void;
  const running = new Promise<number>((r) => (resolve = r));
  const onDestLine = (l: string): void => {
    lines.push(l);
    const m = /tree running as pid (\d+)/.exec(l);
    if (m) resolve(Number(m[1]));
  };
  return { onDestLine, running };
}

// CLI commands of the dump area. Keep imports of heavy modules inside the
// action handlers (dynamic import) so `lazy-restore --help` stays fast.
import type { Command } from 'commander';

export function register(program: Command): void {
  void program;
}

// Deleted files that are still linked elsewhere (CRIU's link remap,
// --link-remap): a file opened or mapped under a name that was unlinked,
// while another hard link keeps it (nlink > 0), has no name the restore
// could open it by. As CRIU 4.2, the dump gives it one while the tree is
// frozen: a hard link "link_remap.<id>" in the directory the file sat in
// (the nearest existing parent if that directory is gone too), made from
// the process's own fd or mapping (linkat AT_SYMLINK_FOLLOW on the /proc
// magic link). files.img gets a reg_file_entry <id> for that name and
// remap-fpath.img a REMAP_TYPE LINKED entry from the original file's id to
// it; restore (plugin/restore/ghost.ts) opens the file through it and
// unlinks it. The names stay on disk for the restore; a dump that fails,
// and one whose tree goes on running (--leave-running, pre-dump), removes
// them again (CRIU's delete_link_remaps).
import { unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { UserError, isSystemError } from '../errors.js';
import { addon } from '../native/addon.js';

export class LinkRemaps {
  private readonly made: string[] = [];

  /** Paths of the link-remap names made so far. */
  get created(): readonly string[] {
    return this.made;
  }

  /**
   * Links the file `source` points at (/proc/PID/fd/N or a map_files link)
   * as "link_remap.<id>" next to `path` (the name it had); returns the new
   * name. `where` prefixes a failure ("pid P: fd N (...)").
   */
  link(where: string, source: string, path: string, id: number): string {
    let dir = dirname(path);
    for (;;) {
      const name = `${dir === '/' ? '' : dir}/link_remap.${id}`;
      try {
        addon.linkFollow(source, name);
        this.made.push(name);
        return name;
      } catch (e) {
        const code = isSystemError(e) ? e.code : undefined;
        // The directory is gone as well: the nearest parent that exists (CRIU's trim_last_parent).
        if (code === 'ENOENT' && dir !== '/') {
          dir = dirname(dir);
          continue;
        }
        throw new UserError(`${where}: cannot link the deleted file ${path} as ${name} for --link-remap: ${code ?? String(e)}`, { cause: e });
      }
    }
  }

  /** Removes every name made (a failed dump, or a tree that goes on running). Never throws. */
  rollback(): void {
    for (const p of this.made.splice(0)) {
      try {
        unlinkSync(p);
      } catch { /* already gone */ }
    }
  }

  /** The names stay for the restore. */
  keep(): void {
    this.made.splice(0);
  }
}

// CRIU's memory-image constants, defined once for the whole project: the
// page size (number for byte counts, bigint for addresses), pagemap entry
// flags (PE_*), vma_entry.status bits (VMA_*), vma_entry.flags (MAP_*) and
// vma_entry.prot (PROT_*). Values are the image ABI (IMAGE-FORMAT.md §3.9).

/** Page size of x86-64; every page count and offset in pagemaps is in these units. */
export const PAGE_SIZE = 4096;
/** PAGE_SIZE as a bigint, for addresses and byte counts of memory. */
export const PAGE = BigInt(PAGE_SIZE);

/** pagemap_entry.flags bits. */
export const PE_PARENT = 1;
export const PE_LAZY = 2;
export const PE_PRESENT = 4;

/** vma_entry.status bits (image ABI). */
export const VMA_AREA_NONE = 0;
export const VMA_AREA_REGULAR = 0x1;
export const VMA_AREA_STACK = 0x2;
export const VMA_AREA_VSYSCALL = 0x4;
export const VMA_AREA_VDSO = 0x8;
export const VMA_AREA_HEAP = 0x20;
export const VMA_FILE_PRIVATE = 0x40;
export const VMA_FILE_SHARED = 0x80;
export const VMA_ANON_SHARED = 0x100;
export const VMA_ANON_PRIVATE = 0x200;
export const VMA_AREA_SYSVIPC = 0x400;
export const VMA_AREA_SOCKET = 0x800;
export const VMA_AREA_VVAR = 0x1000;
export const VMA_AREA_AIORING = 0x2000;
export const VMA_AREA_MEMFD = 0x4000;
export const VMA_AREA_SHSTK = 0x8000;
export const VMA_AREA_GUARD = 0x10000;
export const VMA_AREA_UPROBES = 0x20000;
export const VMA_EXT_PLUGIN = 0x08000000;
export const VMA_UNSUPP = 0x80000000;

/** vma_entry.flags bits CRIU stores (MAP_*). */
export const MAP_SHARED = 0x1;
export const MAP_PRIVATE = 0x2;
export const MAP_DROPPABLE = 0x8;
export const MAP_ANONYMOUS = 0x20;
export const MAP_GROWSDOWN = 0x100;
export const MAP_LOCKED = 0x2000;
export const MAP_NORESERVE = 0x4000;
export const MAP_HUGETLB = 0x40000;

/** vma_entry.prot bits. */
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;


/** A half-open address range [start, end). */
export interface Span { start: bigint; end: bigint }

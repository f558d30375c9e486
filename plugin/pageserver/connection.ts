// What the page server's push receiver, lazy responder and session
// handling share: one accepted connection and the server's counters.
import type { CommandParser } from './parser.js';
import type { PsHeader } from './protocol.js';
import type { AnySocket } from './transport.js';

export interface PageServerStats {
  sessions: number;
  connections: number;
  refusedConnections: number;
  gets: number;
  pagesServed: bigint;
  pagesReceived: bigint;
  pagemapsWritten: number;
}

export interface Conn {
  id: number;
  sock: AnySocket;
  peer: string;
  parser: CommandParser;
  /** Lazy mode: commands read and not yet answered, in order. */
  queue: PsHeader[];
  closed: boolean;
  /** Id of the native responder thread serving it, while it does. */
  native: number | undefined;
}

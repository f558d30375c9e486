// One connection of CRIU's RPC: a SOCK_SEQPACKET socket carrying one
// criu_req or criu_resp per record. NOTIFY round trips (CRIU's action
// scripts in RPC mode) are a response of type NOTIFY answered by a request
// of type NOTIFY with notify_success.
import { addon } from '../native/addon.js';
import { isSystemError } from '../errors.js';
import { mark } from '../phases.js';
import { type CriuReq, type CriuResp, ReqType, RpcError, decodeReq, encodeResp, reqTypeName } from './messages.js';

const SOCK_SEQPACKET = 5;

export class RpcChannel {
  readonly fd: number;
  /** The client (SO_PEERCRED): its fds are reached through /proc/PID/fd, as CRIU does. */
  readonly peer: { pid: number; uid: number; gid: number };
  private closed = false;

  constructor(fd: number) {
    let type: number;
    try {
      type = addon.socketType(fd);
    } catch (e) {
      throw new RpcError(`fd ${fd} is not a socket: ${isSystemError(e) ? e.code : String(e)}`, 9 /* EBADF */);
    }
    if (type !== SOCK_SEQPACKET) throw new RpcError(`fd ${fd} is not a SOCK_SEQPACKET socket (SO_TYPE ${type})`, 88 /* ENOTSOCK */);
    this.fd = fd;
    this.peer = addon.peerCred(fd);
  }

  /** The next request, or null when the client closed its end. */
  async recv(): Promise<CriuReq | null> {
    const buf = await addon.seqpacketRecv(this.fd, -1);
    if (buf === null) return null;
    const req = decodeReq(buf);
    mark(`rpc: ${reqTypeName(req.type)} received`);
    return req;
  }

  send(resp: CriuResp, passFd?: number): void {
    addon.seqpacketSend(this.fd, encodeResp(resp), passFd);
    mark(`rpc: ${reqTypeName(resp.type)}${resp.notify ? ` ${resp.notify.script}` : ''} sent`);
  }

  /**
   * CRIU's action script in RPC mode: tells the client `script` (with the
   * restored root's pid where CRIU sends one) and waits for its verdict. A
   * failed script, a closed client or any other request is an error.
   */
  async notify(script: string, pid?: number, passFd?: number): Promise<void> {
    this.send({ type: ReqType.NOTIFY, success: true, notify: { script, ...(pid !== undefined ? { pid } : {}) } }, passFd);
    let reply: CriuReq | null;
    try {
      reply = await this.recv();
    } catch (e) {
      throw new RpcError(`notify ${script}: bad reply from the RPC client: ${e instanceof Error ? e.message : String(e)}`, 74 /* EBADMSG */);
    }
    if (reply === null) throw new RpcError(`notify ${script}: the RPC client closed the connection`, 104 /* ECONNRESET */);
    if (reply.type !== ReqType.NOTIFY) throw new RpcError(`notify ${script}: the RPC client answered with ${reqTypeName(reply.type)} instead of NOTIFY`, 56 /* EBADRQC */);
    if (reply.notify_success !== true) throw new RpcError(`notify ${script}: the RPC client reported the script failed`, 125 /* ECANCELED */);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    addon.restoreCloseFd(this.fd);
  }
}

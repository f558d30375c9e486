// CRIU's RPC messages (proto/rpc.proto): criu_req from the client,
// criu_resp back, as plain objects with CRIU's snake_case field names.
// Decoding checks the wire structure like protobuf-c does (plugin/images
// codec); a record that does not decode is an RpcError, never a crash.
import { decodeMessage, encodeMessage } from '../images/codec.js';
import { ImageError, UserError } from '../errors.js';

/** criu_req_type. */
export const ReqType = {
  EMPTY: 0, DUMP: 1, RESTORE: 2, CHECK: 3, PRE_DUMP: 4, PAGE_SERVER: 5, NOTIFY: 6, CPUINFO_DUMP: 7, CPUINFO_CHECK: 8,
  FEATURE_CHECK: 9, VERSION: 10, WAIT_PID: 11, PAGE_SERVER_CHLD: 12, SINGLE_PRE_DUMP: 13,
} as const;
export type ReqType = (typeof ReqType)[keyof typeof ReqType];

export function reqTypeName(t: number): string {
  for (const [k, v] of Object.entries(ReqType)) if (v === t) return k;
  return `type ${t}`;
}

/** criu_cg_mode. */
export const CgMode = { IGNORE: 0, CG_NONE: 1, PROPS: 2, SOFT: 3, FULL: 4, STRICT: 5, DEFAULT: 6 } as const;

export interface PageServerInfo { address?: string; port?: number; pid?: number; fd?: number }
export interface ExtMountMap { key: string; val: string }
export interface InheritFd { key: string; fd: number }
export interface CgroupRoot { ctrl?: string; path: string }
export interface JoinNamespace { ns: string; ns_file: string; extra_opt?: string }
export interface VethPair { if_in: string; if_out: string }

/** criu_opts: the fields we read by name; the service also walks every other field to refuse it. */
export interface CriuOpts {
  images_dir_fd: number;
  images_dir?: string;
  pid?: number;
  leave_running?: boolean;
  shell_job?: boolean;
  log_level?: number;
  log_file?: string;
  ps?: PageServerInfo;
  notify_scripts?: boolean;
  root?: string;
  parent_img?: string;
  track_mem?: boolean;
  work_dir_fd?: number;
  ext_mnt: ExtMountMap[];
  manage_cgroups?: boolean;
  cg_root: CgroupRoot[];
  rst_sibling?: boolean;
  inherit_fd: InheritFd[];
  manage_cgroups_mode?: number;
  external: string[];
  empty_ns?: number;
  join_ns: JoinNamespace[];
  veths: VethPair[];
  cgroup_dump_controller?: string[];
  cgroup_props?: string;
  cgroup_props_file?: string;
  cgroup_yard?: string;
  freeze_cgroup?: string;
  timeout?: number;
  lazy_pages?: boolean;
  status_fd?: number;
  orphan_pts_master?: boolean;
  tls_cacert?: string;
  tls_cert?: string;
  tls_key?: string;
  tls?: boolean;
  [field: string]: unknown;
}

export interface CriuFeatures { mem_track?: boolean; lazy_pages?: boolean; pidfd_store?: boolean }

export interface CriuReq {
  type: number;
  opts?: CriuOpts;
  notify_success?: boolean;
  keep_open?: boolean;
  features?: CriuFeatures;
  pid?: number;
}

export interface CriuVersion { major_number: number; minor_number: number; gitid?: string; sublevel?: number; extra?: number; name?: string }

export interface CriuResp {
  type: number;
  success: boolean;
  dump?: { restored?: boolean };
  restore?: { pid: number };
  notify?: { script?: string; pid?: number };
  ps?: PageServerInfo;
  cr_errno?: number;
  features?: CriuFeatures;
  cr_errmsg?: string;
  version?: CriuVersion;
  status?: number;
}

/** A request that cannot be served as sent (garbage, bad sequence): answered with an error response. */
export class RpcError extends UserError {
  readonly errno: number;
  constructor(message: string, errno: number) {
    super(message);
    this.name = 'RpcError';
    this.errno = errno;
  }
}

export function decodeReq(buf: Buffer): CriuReq {
  try {
    return decodeMessage<CriuReq>('criu_req', buf, { file: 'RPC request', offset: undefined });
  } catch (e) {
    if (e instanceof ImageError) throw new RpcError(`${e.message} (${buf.length} bytes)`, 74 /* EBADMSG */);
    throw e;
  }
}

export function encodeResp(resp: CriuResp): Buffer {
  return encodeMessage('criu_resp', resp);
}

/** For tests and clients: the other direction. */
export function encodeReq(req: CriuReq | Omit<CriuReq, 'opts'> & { opts?: Partial<CriuOpts> }): Buffer {
  return encodeMessage('criu_req', req);
}

export function decodeResp(buf: Buffer): CriuResp {
  return decodeMessage<CriuResp>('criu_resp', buf, { file: 'RPC response', offset: undefined });
}

/** Data the SDK returns, parsed from the daemon's JSON (docs/api.md). */

export type SandboxState = 'running' | 'frozen' | 'killed' | 'expired' | 'failed'

export interface SandboxInfo {
  id: string
  state: SandboxState
  createdAt: Date | null
  expiresAt: Date | null
  metadata: Record<string, string>
  preset?: string
  pid?: number
  error?: string
  raw: Record<string, unknown>
}

export interface CommandResult {
  stdout: string
  stderr: string
  exitCode: number | null
  /** null on success, else a one-line reason (E2B's `error`). */
  error: string | null
  signal: number | null
  timedOut: boolean
  oomKilled: boolean
  /** The resource envelope (null for a background process's result). */
  wallMs: number | null
  cpuMs: number | null
  peakMemoryBytes: number | null
  stdoutTruncated: boolean
  stderrTruncated: boolean
}

export type FileType = 'file' | 'dir' | 'symlink' | 'other'

export interface EntryInfo {
  name: string
  path: string
  type: FileType
  size: number
  mode: number
  modifiedTime: Date | null
  symlinkTarget?: string
}

export interface ProcessInfo {
  pid: number
  cmd: string[]
  pty: boolean
  running: boolean
  exitCode: number | null
  signal: number | null
}

export type FilesystemEventType = 'create' | 'modify' | 'delete' | 'rename' | 'other'

export interface FilesystemEvent {
  /** The path relative to the watched directory (E2B's `name`). */
  name: string
  /** The absolute path inside the sandbox. */
  path: string
  type: FilesystemEventType
  tsMs: number
}

export interface SandboxEvent {
  sandbox: string | null
  seq: number | null
  time: Date | null
  /** `exec.started`, `proc.exec`, `net.denied`, `sandbox.killed`, ... or `lagged`. */
  kind: string
  data: Record<string, unknown>
  dropped: number
}

export interface MetricsSample {
  t: number
  cpuPct: number
  memoryBytes: number
  pids: number
  diskBytes: number
  netIn: number
  netOut: number
}

export interface Metrics {
  t: number
  state: string
  cpuUsageNs: number
  cpuPct: number
  memoryBytes: number
  memoryPeakBytes: number | null
  pids: number
  diskBytes: number
  netIn: number
  netOut: number
  violations: number
  history: MetricsSample[]
  raw: Record<string, unknown>
}

export interface PtySize {
  rows: number
  cols: number
}

type Json = Record<string, any>

const time = (s: unknown): Date | null => (typeof s === 'string' && s ? new Date(s) : null)
const num = (v: unknown): number => (typeof v === 'number' ? v : 0)
const numOrNull = (v: unknown): number | null => (typeof v === 'number' ? v : null)

export function sandboxInfo(d: Json): SandboxInfo {
  return {
    id: d.id,
    state: d.state,
    createdAt: time(d.created_at),
    expiresAt: time(d.expires_at),
    metadata: { ...(d.metadata ?? {}) },
    preset: d.preset ?? undefined,
    pid: d.pid ?? undefined,
    error: d.error ?? undefined,
    raw: d,
  }
}

export function describeFailure(r: Omit<CommandResult, 'error'>): string | null {
  if (r.exitCode === 0 && !r.timedOut) return null
  if (r.timedOut) return 'command timed out' + (r.wallMs !== null ? ` after ${r.wallMs} ms` : '')
  if (r.oomKilled) return 'command killed: out of memory'
  if (r.signal !== null) return `command killed by signal ${r.signal}`
  if (r.exitCode === null) return 'command ended without an exit code'
  return `exit status ${r.exitCode}`
}

export function commandResult(d: Json): CommandResult {
  const r = {
    stdout: d.stdout ?? '',
    stderr: d.stderr ?? '',
    exitCode: numOrNull(d.exit_code),
    signal: numOrNull(d.signal),
    timedOut: Boolean(d.timed_out),
    oomKilled: Boolean(d.oom_killed),
    wallMs: numOrNull(d.wall_ms),
    cpuMs: numOrNull(d.cpu_ms),
    peakMemoryBytes: numOrNull(d.peak_memory_bytes),
    stdoutTruncated: Boolean(d.stdout_truncated),
    stderrTruncated: Boolean(d.stderr_truncated),
  }
  return { ...r, error: describeFailure(r) }
}

export function entryInfo(d: Json): EntryInfo {
  const t = ['file', 'dir', 'symlink'].includes(d.type) ? d.type : 'other'
  return {
    name: d.name,
    path: d.path,
    type: t,
    size: num(d.size),
    mode: num(d.mode),
    modifiedTime: time(d.mtime),
    symlinkTarget: d.symlink_target ?? undefined,
  }
}

export function processInfo(d: Json): ProcessInfo {
  return {
    pid: d.pid,
    cmd: [...(d.cmd ?? [])],
    pty: Boolean(d.pty),
    running: Boolean(d.running),
    exitCode: numOrNull(d.exit_code),
    signal: numOrNull(d.signal),
  }
}

export function filesystemEvent(data: string, watched: string): FilesystemEvent {
  const d = JSON.parse(data)
  const path = String(d.path ?? '')
  const base = watched.replace(/\/+$/, '') + '/'
  const type = ['create', 'modify', 'delete', 'rename'].includes(d.type) ? d.type : 'other'
  return { name: path.startsWith(base) ? path.slice(base.length) : path, path, type, tsMs: num(d.ts) }
}

export function sandboxEvent(event: string, data: string): SandboxEvent {
  const d = data ? JSON.parse(data) : {}
  if (event === 'lagged' || !('kind' in d)) {
    return { sandbox: null, seq: null, time: null, kind: event || 'message', data: d, dropped: 0 }
  }
  return {
    sandbox: d.sandbox ?? null,
    seq: d.seq ?? null,
    time: time(d.time),
    kind: d.kind,
    data: { ...(d.data ?? {}) },
    dropped: num(d.dropped),
  }
}

function sample(d: Json): MetricsSample {
  return {
    t: num(d.t),
    cpuPct: num(d.cpu_pct),
    memoryBytes: num(d.memory_bytes),
    pids: num(d.pids),
    diskBytes: num(d.disk_bytes),
    netIn: num(d.net_in),
    netOut: num(d.net_out),
  }
}

export function metrics(d: Json): Metrics {
  const c = d.current ?? {}
  return {
    t: num(c.t),
    state: String(c.state ?? ''),
    cpuUsageNs: num(c.cpu_usage_ns),
    cpuPct: num(c.cpu_pct),
    memoryBytes: num(c.memory_bytes),
    memoryPeakBytes: numOrNull(c.memory_peak_bytes),
    pids: num(c.pids),
    diskBytes: num(c.disk_bytes),
    netIn: num(c.net_in),
    netOut: num(c.net_out),
    violations: num(c.violations),
    history: (d.history ?? []).map(sample),
    raw: d,
  }
}

/**
 * Typed errors. Every error the daemon answers carries its `code` and `message`
 * (`{"error": {"code": ..., "message": ...}}`); `err.message` is the daemon's message.
 * The classes and the code table mirror the Python SDK (sdk/python/src/safehouse/exceptions.py);
 * a test checks both name the same codes.
 */
import type { CommandResult } from './models.js'

export interface ErrorInit {
  status?: number
  code?: string
}

/** Base of every error the SDK throws. */
export class SafehouseError extends Error {
  readonly status?: number
  readonly code?: string
  constructor(message: string, init: ErrorInit = {}) {
    super(message)
    this.name = new.target.name
    this.status = init.status
    this.code = init.code
  }
}

/** 400: the request (or the policy in it) is invalid; the message says what to change. */
export class InvalidRequestError extends SafehouseError {}
/** 401: missing, invalid or revoked API key. */
export class AuthenticationError extends SafehouseError {}
/** 403: the key may not do this, or a forbidden Host/Origin. */
export class ForbiddenError extends SafehouseError {}
/** 404: no such sandbox (or another tenant's), process, file or directory. */
export class NotFoundError extends SafehouseError {}
/** 405: the route does not take that method (an SDK/daemon version mismatch). */
export class MethodNotAllowedError extends SafehouseError {}
/** 409: the sandbox is killed, expired or failed. */
export class SandboxNotRunningError extends SafehouseError {}
/** 409 `frozen`: thaw the sandbox first. */
export class SandboxFrozenError extends SandboxNotRunningError {}
/** 409 `paused`: the sandbox is paused; resume it first (or create it with auto_resume). */
export class SandboxPausedError extends SandboxNotRunningError {}
/** 409 `conflict`: a name is taken, a volume still mounted; `running` (E2B front): already running. */
export class ConflictError extends SafehouseError {}
/** 409 `already_exists` / `directory_not_empty`: the path is in the way. */
export class PathConflictError extends SafehouseError {}
/** 413: the sandbox's disk quota (or a body size limit) was exceeded. */
export class QuotaExceededError extends SafehouseError {}
/** 422: the policy is valid but cannot be enforced on this host. */
export class PolicyRefusedError extends SafehouseError {}
/** The client gave up waiting (HTTP timeout, a handle's wait timeout), or 408. */
export class SafehouseTimeoutError extends SafehouseError {}
/** 503 `capacity`: the daemon is full. */
export class CapacityError extends SafehouseError {}
/** 503 `audit_off`: the daemon runs without an audit log. */
export class AuditOffError extends SafehouseError {}
/** 409 `no_policy`: the sandbox was recorded without a policy; nothing to explain. */
export class NoPolicyError extends SafehouseError {}
/** 429: too many requests of one kind (`too_many_tickets`); wait, then retry. */
export class RateLimitError extends SafehouseError {}
/**
 * 429 `tenant_quota`: the key's tenant is over one of its quotas (running sandboxes, their
 * memory or disk, the rate of creates or commands); the message names the quota and its value.
 */
export class TenantQuotaError extends RateLimitError {}
/** 500 `internal`: the daemon failed; its log has the detail. */
export class ServerError extends SafehouseError {}
/** 501/502/504 from the port proxy. */
export class PortError extends SafehouseError {}

/** A command exited non-zero (or was killed / timed out); carries the result, like E2B. */
export class CommandExitError extends SafehouseError {
  readonly result: CommandResult
  constructor(result: CommandResult) {
    super(exitMessage(result))
    this.result = result
  }
  get stdout(): string {
    return this.result.stdout
  }
  get stderr(): string {
    return this.result.stderr
  }
  get exitCode(): number | null {
    return this.result.exitCode
  }
}

/** The failure and the end of stderr, so that a log line of the error says why. */
function exitMessage(r: CommandResult): string {
  const why = r.error ?? `command failed (exit code ${r.exitCode})`
  const tail = r.stderr.trim().split('\n').slice(-5).join('\n')
  return tail ? `${why}; stderr: ${tail.slice(-1000)}` : why
}

type ErrorClass = new (message: string, init?: ErrorInit) => SafehouseError

/** Every `error.code` the daemon emits and its class. */
export const ERROR_CODES: Readonly<Record<string, ErrorClass>> = Object.freeze({
  invalid_request: InvalidRequestError,
  websocket_required: InvalidRequestError,
  invalid_path: InvalidRequestError,
  not_a_directory: InvalidRequestError,
  is_a_directory: InvalidRequestError,
  not_a_regular_file: InvalidRequestError,
  too_many_entries: InvalidRequestError,
  unauthorized: AuthenticationError,
  forbidden: ForbiddenError,
  forbidden_host: ForbiddenError,
  forbidden_origin: ForbiddenError,
  permission_denied: ForbiddenError,
  not_found: NotFoundError,
  method_not_allowed: MethodNotAllowedError,
  request_timeout: SafehouseTimeoutError,
  not_running: SandboxNotRunningError,
  frozen: SandboxFrozenError,
  paused: SandboxPausedError,
  conflict: ConflictError,
  running: ConflictError,
  already_exists: PathConflictError,
  directory_not_empty: PathConflictError,
  body_too_large: QuotaExceededError,
  quota_exceeded: QuotaExceededError,
  policy_refused: PolicyRefusedError,
  no_policy: NoPolicyError,
  too_many_tickets: RateLimitError,
  tenant_quota: TenantQuotaError,
  internal: ServerError,
  unsupported: PortError,
  port_closed: PortError,
  port_unreachable: PortError,
  bad_gateway: PortError,
  port_timeout: PortError,
  capacity: CapacityError,
  agent_timeout: SafehouseTimeoutError,
  audit_off: AuditOffError,
})

const BY_STATUS: Record<number, ErrorClass> = {
  400: InvalidRequestError,
  401: AuthenticationError,
  403: ForbiddenError,
  404: NotFoundError,
  405: MethodNotAllowedError,
  408: SafehouseTimeoutError,
  409: SandboxNotRunningError,
  413: QuotaExceededError,
  422: PolicyRefusedError,
  429: RateLimitError,
  500: ServerError,
  501: PortError,
  502: PortError,
  503: CapacityError,
  504: PortError,
}

/** The typed error for an error response whose body is the daemon's JSON error. */
export function errorFromResponse(status: number, body: string): SafehouseError {
  let code: string | undefined
  let message = ''
  try {
    const err = JSON.parse(body)?.error
    if (err && typeof err === 'object') {
      code = typeof err.code === 'string' ? err.code : undefined
      message = String(err.message ?? '')
    }
  } catch {
    // not JSON: the body itself is the message
  }
  if (!message) message = body.slice(0, 500) || `HTTP ${status}`
  // The daemon's hint names its HTTP route; an SDK user gets the SDK's call instead.
  message = message.replace('check the id with GET /v1/sandboxes', 'check the id with Sandbox.list()')
  const cls = (code && ERROR_CODES[code]) || BY_STATUS[status] || SafehouseError
  return new cls(message, { status, code })
}

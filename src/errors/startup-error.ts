/**
 * A start-up or operator-command failure that is the environment's fault, not a bug: the
 * port is taken, the database does not answer, a file cannot be written. The CLI prints
 * it as one line and exits 1 (configuration errors are ConfigError, exit 2).
 */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

const SYSTEM_CODE = /^E[A-Z0-9]+$/;
const SQLSTATE = /^[0-9A-Z]{5}$/;

const EXPLAINED: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'address not available on this host',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed (temporary)',
  ETIMEDOUT: 'timed out',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOENT: 'no such file or directory',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
};

/**
 * Whether `err` is an environmental failure the CLI reports in one line: a system call
 * error (`code` like ECONNREFUSED), a PostgreSQL server error (a SQLSTATE), a node:sqlite
 * error, or a StartupError. Anything else is a bug and keeps its stack trace.
 */
export function isOperationalError(err: unknown): boolean {
  if (err instanceof StartupError) return true;
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; severity?: unknown };
  if (typeof e.code !== 'string') return /timeout exceeded when trying to connect|Connection terminated/i.test(String((err as Error).message));
  return SYSTEM_CODE.test(e.code) || e.code === 'ERR_SQLITE_ERROR' || (typeof e.severity === 'string' && SQLSTATE.test(e.code));
}

/** One line for an environmental failure: what failed and the system's reason, no stack. */
export function describeError(err: unknown): string {
  if (err instanceof StartupError) return err.message;
  if (typeof err !== 'object' || err === null) return String(err);
  const e = err as { code?: unknown; message?: unknown; severity?: unknown; errors?: unknown };
  const code = typeof e.code === 'string' ? e.code : undefined;
  let message = typeof e.message === 'string' && e.message !== '' ? e.message : '';
  if (message === '' && Array.isArray(e.errors)) message = e.errors.map((x) => String((x as Error).message)).join('; ');
  message = message.split('\n')[0] ?? '';
  if (code !== undefined && typeof e.severity === 'string' && SQLSTATE.test(code)) return `${message} (PostgreSQL ${code})`;
  const explained = code === undefined ? undefined : EXPLAINED[code];
  if (explained !== undefined && !message.includes(explained)) return `${explained}: ${message || code}`;
  return message || code || 'unknown error';
}

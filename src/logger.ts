import { pino, type Logger } from 'pino';

/**
 * Codes, passwords, seeds, secrets and tokens must never reach a log. Redaction is by key
 * name at ANY depth (pino's own `redact` paths stop at fixed depths, so `a.b.password` got
 * through): every logged object, child binding and serialized error is copied with the
 * values of secret-named keys replaced. Names are compared lower-cased without `_`/`-`, so
 * `client_secret`, `clientSecret` and `Client-Secret` are one name.
 */
export const CENSOR = '[redacted]';

/** Exact (normalised) key names whose values are secrets. */
const SECRET_NAMES = new Set([
  'code',
  'codes',
  'otp',
  'pin',
  'seed',
  'ticket',
  'authorization',
  'proxyauthorization',
  'cookie',
  'cookies',
  'setcookie',
  'masterkey',
  'privatekey',
  'signingkey',
  'hmackey',
  'apikey',
  'credential',
  'credentials',
  'assertion',
  'jwt',
]);

/** Substrings that make any key name secret (`newPassword`, `step_up_token`, `clientAssertion`, `recoveryCodes`…). */
const SECRET_PARTS = ['password', 'passwd', 'passphrase', 'secret', 'token', 'assertion', 'seed', 'ticket', 'cookie'];

/** Keys ending in "code" that are not one-time codes. */
const NOT_SECRET_CODES = new Set(['statuscode', 'errorcode', 'countrycode', 'exitcode', 'httpcode', 'reasoncode']);

export function isSecretLogKey(key: string): boolean {
  const k = key.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (SECRET_NAMES.has(k)) return true;
  if (SECRET_PARTS.some((p) => k.includes(p))) return true;
  return (k.endsWith('code') || k.endsWith('codes')) && !NOT_SECRET_CODES.has(k);
}

const MAX_DEPTH = 12;

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * A copy with secret-named values censored, through plain objects, arrays, Maps and
 * Headers-like objects. Errors are left to the err serializer (which redacts its output),
 * other class instances (Dates, Buffers, KeyObjects) are kept as they are.
 */
export function redactDeep(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (seen.has(value)) return '[circular]';
  if (depth > MAX_DEPTH) return '[too deep]';
  if (Array.isArray(value)) {
    seen.add(value);
    return value.map((v) => redactDeep(v, depth + 1, seen));
  }
  if (value instanceof Map) {
    seen.add(value);
    return Object.fromEntries([...value.entries()].map(([k, v]) => [String(k), isSecretLogKey(String(k)) ? CENSOR : redactDeep(v, depth + 1, seen)]));
  }
  if (!isPlainObject(value)) return value;
  seen.add(value);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = isSecretLogKey(k) && v !== undefined && v !== null && v !== '' ? CENSOR : redactDeep(v, depth + 1, seen);
  }
  return out;
}

/** The standard err serializer, redacted; an error's own `code` (ECONNREFUSED, validation_failed) stays readable. */
function redactedError(err: unknown): unknown {
  const serialized = pino.stdSerializers.err(err as Error) as unknown;
  if (typeof serialized !== 'object' || serialized === null) return serialized;
  const { code, ...rest } = serialized as Record<string, unknown>;
  const redacted = redactDeep(rest) as Record<string, unknown>;
  return code === undefined ? redacted : { ...redacted, code: typeof code === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(code) ? code : CENSOR };
}

export type { Logger };

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const logger = pino(
    {
      level,
      base: { service: 'stepgate' },
      formatters: {
        log: (object) => redactDeep(object) as Record<string, unknown>,
        bindings: (bindings) => redactDeep(bindings) as Record<string, unknown>,
      },
      serializers: { err: redactedError },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
  // Child bindings bypass the formatters; every child inherits this from its parent.
  const child = logger.child;
  logger.child = function redactedChild(this: Logger, bindings, options) {
    return child.call(this, redactDeep(bindings) as typeof bindings, options);
  } as Logger['child'];
  return logger;
}

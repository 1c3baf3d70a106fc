/**
 * Domain errors with stable codes. Callers switch on `code`, never on message text.
 * Only bad *input* becomes an AppError; misuse (bad config, wrong argument types) throws
 * TypeError at start-up.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'invalid_json'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'validation_failed'
  | 'unauthorized'
  | 'invalid_credentials'
  | 'account_locked'
  | 'too_many_requests'
  | 'forbidden'
  | 'csrf_failed'
  | 'not_found'
  | 'conflict'
  | 'password_policy'
  | 'setup_token_invalid'
  | 'service_unavailable'
  | 'internal_error';

export interface InvalidParam {
  /** JSON pointer (RFC 6901) to the field at fault, e.g. `/password`. */
  pointer: string;
  reason: string;
}

export interface AppErrorOptions {
  detail?: string;
  invalidParams?: InvalidParam[];
  retryAfterSeconds?: number;
  cause?: unknown;
}

const STATUS: Record<ErrorCode, number> = {
  invalid_request: 400,
  invalid_json: 400,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_failed: 400,
  unauthorized: 401,
  invalid_credentials: 401,
  account_locked: 423,
  too_many_requests: 429,
  forbidden: 403,
  csrf_failed: 403,
  not_found: 404,
  conflict: 409,
  password_policy: 400,
  setup_token_invalid: 400,
  service_unavailable: 503,
  internal_error: 500,
};

const TITLE: Record<ErrorCode, string> = {
  invalid_request: 'Invalid request',
  invalid_json: 'Malformed JSON body',
  payload_too_large: 'Request body too large',
  unsupported_media_type: 'Unsupported media type',
  validation_failed: 'Request validation failed',
  unauthorized: 'Authentication required',
  invalid_credentials: 'Invalid credentials',
  account_locked: 'Account temporarily locked',
  too_many_requests: 'Too many requests',
  forbidden: 'Forbidden',
  csrf_failed: 'CSRF check failed',
  not_found: 'Not found',
  conflict: 'Conflict',
  password_policy: 'Password does not meet the policy',
  setup_token_invalid: 'Set-up link invalid or expired',
  service_unavailable: 'Service unavailable',
  internal_error: 'Internal server error',
};

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly title: string;
  readonly detail: string | undefined;
  readonly invalidParams: InvalidParam[] | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, options: AppErrorOptions = {}) {
    super(options.detail ?? TITLE[code], options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = STATUS[code];
    this.title = TITLE[code];
    this.detail = options.detail;
    this.invalidParams = options.invalidParams;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

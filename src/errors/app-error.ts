/**
 * Domain errors with stable codes. Callers switch on `code`, never on message text.
 * Only bad *input* becomes an AppError; misuse (bad config, wrong argument types) throws
 * TypeError at start-up.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'invalid_json'
  | 'duplicate_member'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'validation_failed'
  // money in a step-up binding (src/verifier/money.ts)
  | 'currency_unsupported'
  | 'amount_precision_exceeded'
  | 'amount_not_canonical'
  | 'unauthorized'
  | 'invalid_credentials'
  | 'invalid_client'
  | 'account_locked'
  | 'too_many_requests'
  | 'forbidden'
  | 'csrf_failed'
  | 'not_found'
  | 'conflict'
  | 'password_policy'
  | 'setup_token_invalid'
  | 'reset_token_invalid'
  | 'service_unavailable'
  | 'overloaded'
  | 'internal_error'
  | 'stepup_not_found'
  | 'invalid_ticket'
  | 'stepup_expired'
  | 'stepup_not_pending'
  | 'factor_not_allowed'
  | 'factor_invalid'
  | 'factor_locked'
  | 'attempts_exhausted'
  | 'enrollment_required'
  | 'access_denied'
  | 'authorization_pending'
  | 'slow_down'
  | 'expired_token'
  | 'invalid_grant'
  | 'challenge_required'
  | 'challenge_cooldown'
  | 'challenge_attempts_exhausted'
  | 'fresh_login_required'
  | 'enrolment_attempts_exhausted'
  | 'phone_invalid'
  | 'sms_region_not_allowed'
  | 'sms_limit_exceeded'
  | 'sms_unavailable'
  | 'registration_refused'
  // hardware OTP tokens (issue 6)
  | 'token_file_too_large'
  | 'token_file_invalid'
  | 'token_file_key_required'
  | 'token_file_decryption_failed'
  | 'token_import_rejected'
  | 'token_not_found'
  | 'token_state_conflict'
  | 'token_code_invalid'
  | 'token_bind_failed'
  | 'token_resync_failed'
  // admin console (issue 8)
  | 'second_factor_required'
  | 'confirmation_invalid';

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
  duplicate_member: 400,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_failed: 400,
  currency_unsupported: 400,
  amount_precision_exceeded: 400,
  amount_not_canonical: 400,
  unauthorized: 401,
  invalid_credentials: 401,
  invalid_client: 401,
  account_locked: 423,
  too_many_requests: 429,
  forbidden: 403,
  second_factor_required: 403,
  confirmation_invalid: 400,
  csrf_failed: 403,
  not_found: 404,
  conflict: 409,
  password_policy: 400,
  setup_token_invalid: 400,
  reset_token_invalid: 400,
  service_unavailable: 503,
  overloaded: 503,
  internal_error: 500,
  stepup_not_found: 404,
  invalid_ticket: 401,
  stepup_expired: 410,
  stepup_not_pending: 409,
  factor_not_allowed: 400,
  factor_invalid: 401,
  factor_locked: 423,
  attempts_exhausted: 429,
  enrollment_required: 409,
  access_denied: 403,
  authorization_pending: 400,
  slow_down: 400,
  expired_token: 400,
  invalid_grant: 400,
  challenge_required: 400,
  challenge_cooldown: 429,
  challenge_attempts_exhausted: 429,
  fresh_login_required: 401,
  enrolment_attempts_exhausted: 429,
  phone_invalid: 400,
  sms_region_not_allowed: 400,
  sms_limit_exceeded: 429,
  sms_unavailable: 503,
  registration_refused: 400,
  token_file_too_large: 413,
  token_file_invalid: 400,
  token_file_key_required: 400,
  token_file_decryption_failed: 400,
  token_import_rejected: 400,
  token_not_found: 404,
  token_state_conflict: 409,
  token_code_invalid: 400,
  token_bind_failed: 400,
  token_resync_failed: 400,
};

const TITLE: Record<ErrorCode, string> = {
  invalid_request: 'Invalid request',
  invalid_json: 'Malformed JSON body',
  duplicate_member: 'Duplicate member name in JSON',
  payload_too_large: 'Request body too large',
  unsupported_media_type: 'Unsupported media type',
  validation_failed: 'Request validation failed',
  currency_unsupported: 'Not an ISO 4217 currency that amounts can be given in',
  amount_precision_exceeded: 'The amount has more decimals than its currency allows',
  amount_not_canonical: 'Write the amount with exactly its currency\'s number of decimals',
  unauthorized: 'Authentication required',
  invalid_credentials: 'Invalid credentials',
  invalid_client: 'Client authentication failed',
  account_locked: 'Account temporarily locked',
  too_many_requests: 'Too many requests',
  forbidden: 'Forbidden',
  second_factor_required: 'Second factor required',
  confirmation_invalid: 'Confirmation invalid, expired or already used',
  csrf_failed: 'CSRF check failed',
  not_found: 'Not found',
  conflict: 'Conflict',
  password_policy: 'Password does not meet the policy',
  setup_token_invalid: 'Set-up link invalid or expired',
  reset_token_invalid: 'Password-reset link invalid, expired or used',
  service_unavailable: 'Service unavailable',
  overloaded: 'Too many sign-ins at once: try again in a moment',
  internal_error: 'Internal server error',
  stepup_not_found: 'Step-up not found',
  invalid_ticket: 'Invalid or unknown step-up ticket',
  stepup_expired: 'Step-up expired',
  stepup_not_pending: 'Step-up is no longer pending',
  factor_not_allowed: 'Factor not accepted for this step-up',
  factor_invalid: 'Verification failed',
  factor_locked: 'Factor temporarily locked',
  attempts_exhausted: 'Too many attempts for this step-up',
  enrollment_required: 'The user has no enrolled factor that satisfies the policy',
  access_denied: 'Access denied',
  authorization_pending: 'The user has not completed the step-up yet',
  slow_down: 'Polling too fast',
  expired_token: 'The step-up expired',
  invalid_grant: 'The step-up token was already issued or cannot be issued',
  challenge_required: 'Start a challenge for this factor first (or the last one expired)',
  challenge_cooldown: 'Wait before requesting another challenge',
  challenge_attempts_exhausted: 'Too many attempts for this challenge',
  fresh_login_required: 'Sign in again to do this',
  enrolment_attempts_exhausted: 'Too many wrong codes for this enrolment: start it again',
  phone_invalid: 'Not a valid mobile phone number',
  sms_region_not_allowed: 'SMS codes cannot be sent to numbers in this region',
  sms_limit_exceeded: 'Too many SMS codes requested: try again later',
  sms_unavailable: 'SMS delivery is unavailable: try again later or use another method',
  registration_refused: 'The authenticator response was not accepted',
  token_file_too_large: 'Token file too large',
  token_file_invalid: 'Token file not acceptable',
  token_file_key_required: 'The token file is encrypted: a transport key or password is needed',
  // One title for a wrong key, a wrong password and a tampered file: it must not say which.
  token_file_decryption_failed: 'The token file could not be decrypted: wrong key or password, or the file was altered',
  token_import_rejected: 'Some tokens in the file are not acceptable; nothing was imported',
  token_not_found: 'No such hardware token',
  token_state_conflict: 'The hardware token is not in a state that allows this',
  token_code_invalid: 'The code from the token was not accepted',
  token_bind_failed: 'Serial number or code not accepted',
  token_resync_failed: 'The two codes were not accepted for resynchronisation',
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

import type { StepUpTokenErrorCode } from '../verifier/index.ts';

/**
 * The payment-code service's errors, with stable codes (callers switch on `code`, never on
 * the message). Every one becomes an RFC 9457 problem+json in one place (http/problem.ts).
 * Misuse (bad configuration, wrong argument types) throws TypeError at start-up instead.
 */
export type PaymentCodeErrorCode =
  // request shape
  | 'invalid_json'
  | 'duplicate_member'
  | 'invalid_request'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'validation_failed'
  // money (src/verifier/money.ts, the rule the gateway applies)
  | 'currency_unsupported'
  | 'amount_precision_exceeded'
  | 'amount_not_canonical'
  | 'not_found'
  | 'csrf_failed'
  // callers
  | 'unauthorized'
  | 'forbidden'
  // step-up (401 with an RFC 9470 challenge)
  | 'step_up_required'
  | 'step_up_pending'
  | 'step_up_failed'
  | 'step_up_unknown'
  | 'step_up_used'
  | 'step_up_mismatch'
  | StepUpTokenErrorCode
  // the gateway said no to the step-up request itself
  | 'enrollment_required'
  | 'access_denied'
  // redemption
  | 'code_unknown'
  | 'code_expired'
  | 'code_already_redeemed'
  | 'amount_exceeds_limit'
  | 'currency_mismatch'
  | 'merchant_mismatch'
  | 'qr_invalid'
  | 'seed_revoked'
  | 'seed_expired'
  | 'seed_exhausted'
  | 'device_locked'
  // offline seeds
  | 'seed_not_found'
  | 'seed_not_active'
  // dependencies
  | 'gateway_unavailable'
  | 'service_unavailable'
  | 'internal_error';

export interface InvalidParam {
  /** JSON pointer (RFC 6901) to the field at fault. */
  pointer: string;
  reason: string;
}

const SPEC: Record<PaymentCodeErrorCode, [status: number, title: string]> = {
  invalid_json: [400, 'Malformed JSON body'],
  duplicate_member: [400, 'Duplicate member name in JSON'],
  invalid_request: [400, 'Invalid request'],
  payload_too_large: [413, 'Request body too large'],
  unsupported_media_type: [415, 'Unsupported media type'],
  validation_failed: [400, 'Request validation failed'],
  currency_unsupported: [400, 'Not an ISO 4217 currency that amounts can be given in'],
  amount_precision_exceeded: [400, 'The amount has more decimals than its currency allows'],
  amount_not_canonical: [400, "Write the amount with exactly its currency's number of decimals"],
  not_found: [404, 'Not found'],
  csrf_failed: [403, 'The form expired; reload the page'],
  unauthorized: [401, 'A valid API key is required'],
  forbidden: [403, 'This API key may not do this'],
  step_up_required: [401, 'Step-up authentication required'],
  step_up_pending: [401, 'The user has not completed the step-up yet'],
  step_up_failed: [401, 'The step-up was not completed; start again'],
  step_up_unknown: [401, 'No such step-up for this caller; start again'],
  step_up_used: [401, 'This step-up was already used; start again'],
  step_up_mismatch: [401, 'The step-up token belongs to another step-up'],
  token_malformed: [401, 'The step-up token is malformed'],
  alg_not_allowed: [401, 'The step-up token algorithm is not accepted'],
  typ_invalid: [401, 'The token is not a step-up token'],
  header_forbidden: [401, 'The step-up token header is not accepted'],
  signature_invalid: [401, 'The step-up token signature is invalid'],
  kid_unknown: [401, 'The step-up token was signed with an unknown key'],
  issuer_invalid: [401, 'The step-up token was issued by another issuer'],
  audience_invalid: [401, 'The step-up token was issued for another service'],
  token_expired: [401, 'The step-up token has expired'],
  token_not_yet_valid: [401, 'The step-up token is not valid yet'],
  auth_too_old: [401, 'A more recent authentication is required'],
  acr_insufficient: [401, 'A stronger authentication is required'],
  subject_mismatch: [401, 'The step-up token was issued for another user'],
  action_mismatch: [401, 'The step-up token approves another action'],
  context_mismatch: [401, 'The step-up token approves a different request'],
  context_invalid: [401, 'The step-up token approves a request the gateway must refuse'],
  replayed: [401, 'The step-up token was already used'],
  enrollment_required: [409, 'The user has no factor that satisfies the policy'],
  access_denied: [403, 'The gateway refused this request'],
  code_unknown: [404, 'No such payment code'],
  code_expired: [410, 'The payment code has expired'],
  code_already_redeemed: [409, 'The payment code was already redeemed'],
  amount_exceeds_limit: [422, 'The amount exceeds what the payer authorised'],
  currency_mismatch: [422, 'The currency differs from the authorised one'],
  merchant_mismatch: [422, 'The code was authorised for another payee'],
  qr_invalid: [400, 'The signed QR code does not verify'],
  seed_revoked: [410, 'The device of this code was revoked'],
  seed_expired: [410, 'The offline seed of this code has expired'],
  seed_exhausted: [409, 'The offline seed has no codes left'],
  device_locked: [423, 'Too many wrong codes for this device; try again later'],
  seed_not_found: [404, 'No such offline seed'],
  seed_not_active: [409, 'The offline seed is no longer active'],
  gateway_unavailable: [503, 'The authentication gateway is unavailable'],
  service_unavailable: [503, 'Service unavailable'],
  internal_error: [500, 'Internal server error'],
};

/** What the 401 challenge tells the wallet: which step-up to complete, and how strong. */
export interface StepUpChallenge {
  acrValues: string;
  maxAgeSeconds: number;
  /** Extra body members (stepup_id, user_url, ticket, …). */
  body?: Record<string, unknown>;
}

export interface PaymentCodeErrorOptions {
  detail?: string;
  invalidParams?: InvalidParam[];
  retryAfterSeconds?: number;
  challenge?: StepUpChallenge;
  /** For verifier refusals: the context field or claim at fault. */
  field?: string;
  cause?: unknown;
}

export class PaymentCodeError extends Error {
  readonly code: PaymentCodeErrorCode;
  readonly status: number;
  readonly title: string;
  readonly detail: string | undefined;
  readonly invalidParams: InvalidParam[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly challenge: StepUpChallenge | undefined;
  readonly field: string | undefined;

  constructor(code: PaymentCodeErrorCode, options: PaymentCodeErrorOptions = {}) {
    const [status, title] = SPEC[code];
    super(options.detail ?? title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PaymentCodeError';
    this.code = code;
    this.status = status;
    this.title = title;
    this.detail = options.detail;
    this.invalidParams = options.invalidParams;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.challenge = options.challenge;
    this.field = options.field;
  }
}

export function isPaymentCodeError(err: unknown): err is PaymentCodeError {
  return err instanceof PaymentCodeError;
}

export function invalid(pointer: string, reason: string, detail?: string): PaymentCodeError {
  return new PaymentCodeError('validation_failed', { invalidParams: [{ pointer, reason }], ...(detail === undefined ? {} : { detail }) });
}

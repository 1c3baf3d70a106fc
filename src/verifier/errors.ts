/**
 * Why a step-up token was refused. Stable codes: callers switch on `code`, never on the
 * message. Every one of these is the presenter's fault (a 401 in HTTP terms).
 */
export type StepUpTokenErrorCode =
  /** Not a compact JWS, too long, bad base64url/JSON, or a required claim is missing or of the wrong type. */
  | 'token_malformed'
  /** `alg` is not exactly one of ES256 / EdDSA (`none`, `noNE`, HS256, RS256… are refused before any key is looked at). */
  | 'alg_not_allowed'
  /** `typ` header missing or not exactly `stepup+jwt`. */
  | 'typ_invalid'
  /** The header carries a parameter that could make us trust a foreign key (`jwk`, `jku`, `x5u`, `x5c`) or `crit`/`b64`. `field` names it. */
  | 'header_forbidden'
  /** The signature does not verify with the gateway key named by `kid`. */
  | 'signature_invalid'
  /** The gateway's JWKS has no usable key with this `kid` (also after a rate-limited refresh). */
  | 'kid_unknown'
  | 'issuer_invalid'
  | 'audience_invalid'
  /** `exp` passed, or `iat` older than `maxTokenAgeSeconds`. */
  | 'token_expired'
  /** `iat`, `nbf` or `auth_time` in the future (beyond the clock tolerance). */
  | 'token_not_yet_valid'
  /** The user authenticated longer ago than `maxAuthAgeSeconds` (`auth_time`). */
  | 'auth_too_old'
  /** `acr` unknown or weaker than required. */
  | 'acr_insufficient'
  /** `sub` is not the user the relying service is acting for. */
  | 'subject_mismatch'
  /** `authorization_details[0].type` is not the action about to be performed. */
  | 'action_mismatch'
  /** `authorization_details[0]` (minus `type`) differs from the expected context; `field` names the first differing field. */
  | 'context_mismatch'
  /**
   * The approved context breaks a binding rule the gateway enforces on creation (an amount with
   * more decimals than its currency, a non-canonical amount, an unknown currency; a string with
   * an invisible or bidirectional character, or not in NFC); `field` names it. Only a token the gateway should never have signed gets here.
   */
  | 'context_invalid'
  /** The `jti` was already consumed: this token was presented before. */
  | 'replayed';

export interface StepUpTokenErrorOptions {
  /** The context field, header parameter or claim at fault. */
  field?: string;
  cause?: unknown;
}

export class StepUpTokenError extends Error {
  override readonly name = 'StepUpTokenError';
  readonly code: StepUpTokenErrorCode;
  readonly field: string | undefined;

  constructor(code: StepUpTokenErrorCode, message: string, options: StepUpTokenErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.field = options.field;
  }
}

export function isStepUpTokenError(err: unknown): err is StepUpTokenError {
  return err instanceof StepUpTokenError;
}

/**
 * The token could not be checked because something the verifier depends on failed (the
 * gateway's JWKS cannot be fetched, the replay store is down or full). Not the presenter's
 * fault: a 503, and the request may be retried. Verification always fails closed.
 */
export type VerifierUnavailableCode = 'jwks_unavailable' | 'replay_store_unavailable';

export class VerifierUnavailableError extends Error {
  override readonly name = 'VerifierUnavailableError';
  readonly code: VerifierUnavailableCode;

  constructor(code: VerifierUnavailableCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

export function isVerifierUnavailableError(err: unknown): err is VerifierUnavailableError {
  return err instanceof VerifierUnavailableError;
}

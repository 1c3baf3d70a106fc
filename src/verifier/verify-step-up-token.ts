import type { KeyObject } from 'node:crypto';
import { errors, jwtVerify, type FlattenedJWSInput, type JWTHeaderParameters, type JWTVerifyGetKey } from 'jose';
import { acrSatisfies, isStepUpAcr, STEPUP_ACR_VALUES, type StepUpAcr } from './acr.ts';
import { systemClock, type VerifierClock } from './clock.ts';
import { contextRuleProblem } from './context-rules.ts';
import { assertExpectedContext, firstContextDifference, type JsonObject, type JsonValue } from './compare-context.ts';
import { StepUpTokenError, VerifierUnavailableError } from './errors.ts';
import type { JwksCache, KeyLookupHeader } from './jwks-cache.ts';
import type { ReplayStore } from './replay-store.ts';
import { jwsDuplicateMember } from './strict-json.ts';

/** The JWS `typ` of a step-up token, compared exactly (no case folding, no `application/` prefix). */
export const STEPUP_TOKEN_TYP = 'stepup+jwt';
/** The only algorithms accepted, always passed to jose: never `none`, HS*, RS*. */
export const STEPUP_ALGORITHMS: readonly string[] = ['ES256', 'EdDSA'];
/** Header parameters that would let a token point at its own key or demand unknown processing. */
export const FORBIDDEN_HEADER_PARAMETERS: readonly string[] = ['jwk', 'jku', 'x5u', 'x5c', 'crit', 'b64'];

// Ours are well under 2 KiB; the bound keeps parsing of hostile input cheap.
const MAX_TOKEN_LENGTH = 8192;
const MAX_JTI_LENGTH = 256;
const B64URL = /^[A-Za-z0-9_-]*$/;
// One decoder for every call (a decoder per token was a measurable share of the check); fatal: bad UTF-8 throws.
const UTF8 = new TextDecoder('utf-8', { fatal: true });
// Built once: jose only reads them.
const JOSE_ALGORITHMS: string[] = [...STEPUP_ALGORITHMS];
const REQUIRED_CLAIMS: string[] = ['iss', 'sub', 'aud', 'iat', 'exp', 'jti'];

/** One RFC 9396 authorization detail: the action and the exact context the user approved. */
export interface AuthorizationDetail {
  type: string;
  [field: string]: JsonValue;
}

/** The verified claims of a step-up token (DESIGN.md §1 "Token format"). */
export interface StepUpClaims {
  iss: string;
  /** The user's id at the gateway. */
  sub: string;
  /** The relying client's id. */
  aud: string;
  iat: number;
  exp: number;
  nbf?: number;
  jti: string;
  /** The step-up transaction id. */
  txn: string;
  auth_time: number;
  acr: StepUpAcr;
  /** RFC 8176 methods actually proven (`pwd`, `otp`, `hwk`, `user`…). */
  amr: string[];
  authorization_details: [AuthorizationDetail];
}

export interface VerifyStepUpTokenOptions {
  /** The gateway's issuer identifier, compared exactly. */
  issuer: string;
  /** This relying service's client id at the gateway, compared exactly (`aud` must be this one string). */
  audience: string;
  /** From `createJwksCache` (recommended), or any jose key getter such as `createRemoteJWKSet`. */
  jwks: JwksCache | JWTVerifyGetKey;
  /** Minimum `acr`. Without it any known Stepgate acr is accepted. */
  requiredAcr?: StepUpAcr;
  /**
   * The user the relying service is acting for; `sub` must equal it. Required: a token
   * proves one user's consent, and a check that is easy to forget is a check that is forgotten.
   */
  expectedSubject: string;
  /** The action about to be performed (`payment_code.issue`); must equal `authorization_details[0].type`. */
  expectedAction: string;
  /** The exact context about to be acted on; must equal `authorization_details[0]` without `type`. */
  expectedContext: JsonObject;
  /** Where accepted `jti`s are remembered; consumed as the very last step. */
  replayStore: ReplayStore;
  clock?: VerifierClock;
  /** Allowed clock skew with the gateway, 0–60. Default 5. */
  clockToleranceSeconds?: number;
  /** A token is refused once `iat` is older than this, whatever its `exp`. Default 300. */
  maxTokenAgeSeconds?: number;
  /** When set, the user's authentication (`auth_time`) must be at most this old (RFC 9470 `max_age`). */
  maxAuthAgeSeconds?: number;
}

/** Where the verification key comes from: our cache is asked directly, a foreign jose getter through jose. */
type KeySource = { cache: JwksCache; getter?: undefined } | { cache?: undefined; getter: JWTVerifyGetKey };

interface Settings {
  issuer: string;
  audience: string;
  keys: KeySource;
  requiredAcr: StepUpAcr | undefined;
  expectedSubject: string;
  expectedAction: string;
  expectedContext: JsonObject;
  replayStore: ReplayStore;
  clock: VerifierClock;
  toleranceSeconds: number;
  maxTokenAgeSeconds: number;
  maxAuthAgeSeconds: number | undefined;
}

/**
 * Verifies a step-up token for one concrete action and returns its claims. Reading the steps
 * tells the order: cheap structural header checks before any key lookup, then the signature
 * and times, then Stepgate's claims, and the jti is burnt only when everything else passed, so
 * a refused token cannot use up the jti of a valid one. Refusals throw StepUpTokenError
 * (switch on `code`); an unreachable JWKS or replay store throws VerifierUnavailableError.
 */
export async function verifyStepUpToken(token: string, options: VerifyStepUpTokenOptions): Promise<StepUpClaims> {
  const settings = checkOptions(options);
  const header = checkHeader(token);
  const claims = await checkSignatureAndTimes(token, header, settings);
  checkClaims(claims, settings);
  await consumeJti(claims, settings);
  return claims;
}

// ---------------------------------------------------------------------------------------------
// Options (misuse is a TypeError, thrown before the token is looked at)

function nonEmptyString(value: unknown, label: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new TypeError(`${label} must be a non-empty string`);
  return value;
}

function seconds(value: number | undefined, fallback: number, label: string, max: number): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < 0 || v > max) throw new TypeError(`${label} must be a number between 0 and ${max}`);
  return v;
}

function checkOptions(options: VerifyStepUpTokenOptions): Settings {
  if (typeof options !== 'object' || options === null) throw new TypeError('verifyStepUpToken options are required');
  if (options.requiredAcr !== undefined && !isStepUpAcr(options.requiredAcr)) {
    throw new TypeError(`requiredAcr must be one of ${STEPUP_ACR_VALUES.join(', ')}`);
  }
  assertExpectedContext(options.expectedContext);
  if (typeof options.replayStore?.consume !== 'function') throw new TypeError('replayStore must implement consume(jti, expiresAt)');
  const clock = options.clock ?? systemClock;
  if (typeof clock.now !== 'function') throw new TypeError('clock must have now()');
  return {
    issuer: nonEmptyString(options.issuer, 'issuer'),
    audience: nonEmptyString(options.audience, 'audience'),
    keys: keySource(options.jwks),
    requiredAcr: options.requiredAcr,
    expectedSubject: nonEmptyString(options.expectedSubject, 'expectedSubject'),
    expectedAction: nonEmptyString(options.expectedAction, 'expectedAction'),
    expectedContext: options.expectedContext,
    replayStore: options.replayStore,
    clock,
    toleranceSeconds: seconds(options.clockToleranceSeconds, 5, 'clockToleranceSeconds', 60),
    maxTokenAgeSeconds: seconds(options.maxTokenAgeSeconds, 300, 'maxTokenAgeSeconds', 86_400),
    maxAuthAgeSeconds:
      options.maxAuthAgeSeconds === undefined ? undefined : seconds(options.maxAuthAgeSeconds, 0, 'maxAuthAgeSeconds', 31_536_000),
  };
}

/**
 * Our cache throws typed errors itself. A foreign jose getter's errors are translated: "no
 * matching key" means an unknown kid, anything else (network, bad JWKS) means the key source
 * is unavailable — never a verdict on the token.
 */
function keySource(jwks: JwksCache | JWTVerifyGetKey): KeySource {
  if (typeof jwks === 'function') {
    return {
      getter: async (header: JWTHeaderParameters, input: FlattenedJWSInput) => {
        try {
          return await jwks(header, input);
        } catch (err) {
          if (err instanceof StepUpTokenError || err instanceof VerifierUnavailableError) throw err;
          if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
            throw new StepUpTokenError('kid_unknown', 'no gateway key matches this kid', { field: 'kid', cause: err });
          }
          throw new VerifierUnavailableError('jwks_unavailable', 'the gateway key source failed', { cause: err });
        }
      },
    };
  }
  if (typeof jwks === 'object' && jwks !== null && typeof jwks.getKey === 'function') return { cache: jwks };
  throw new TypeError('jwks must come from createJwksCache() or be a jose key getter');
}

// ---------------------------------------------------------------------------------------------
// 1. Structure and protected header, before any key is fetched

function malformed(message: string, field?: string): StepUpTokenError {
  return new StepUpTokenError('token_malformed', message, field === undefined ? {} : { field });
}

/** Returns the header fields the key lookup needs (alg is one of STEPUP_ALGORITHMS, kid a non-empty string). */
function checkHeader(token: unknown): KeyLookupHeader {
  if (typeof token !== 'string' || token.length === 0) throw malformed('no token');
  if (token.length > MAX_TOKEN_LENGTH) throw malformed(`token longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) throw malformed('not a compact JWS (three dot-separated parts)');
  const [encodedHeader = '', encodedPayload = '', signature = ''] = parts;
  if (encodedHeader === '' || !B64URL.test(encodedHeader)) throw malformed('protected header is not base64url');

  let header: unknown;
  try {
    header = JSON.parse(UTF8.decode(Buffer.from(encodedHeader, 'base64url')));
  } catch {
    throw malformed('protected header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw malformed('protected header is not a JSON object');
  // jose keeps the last of two equal names; the token is refused instead (one reading only).
  const duplicate = jwsDuplicateMember(token);
  if (duplicate !== undefined) throw malformed(`${duplicate.part} repeats a member (${duplicate.pointer})`, duplicate.pointer.split('/')[1]?.replaceAll('~1', '/').replaceAll('~0', '~'));
  const h = header as Record<string, unknown>;

  // Exact, case-sensitive: "none", "noNE", "HS256" (public key as HMAC secret), "RS256"… all stop here.
  if (typeof h.alg !== 'string' || !STEPUP_ALGORITHMS.includes(h.alg)) {
    throw new StepUpTokenError('alg_not_allowed', 'alg must be ES256 or EdDSA', { field: 'alg' });
  }
  for (const name of FORBIDDEN_HEADER_PARAMETERS) {
    if (Object.hasOwn(h, name)) throw new StepUpTokenError('header_forbidden', `header parameter "${name}" is not accepted`, { field: name });
  }
  if (h.typ !== STEPUP_TOKEN_TYP) throw new StepUpTokenError('typ_invalid', `typ must be exactly "${STEPUP_TOKEN_TYP}"`, { field: 'typ' });
  if (typeof h.kid !== 'string' || h.kid.length === 0 || h.kid.length > 256) throw malformed('kid header missing or invalid', 'kid');
  if (encodedPayload === '' || !B64URL.test(encodedPayload)) throw malformed('payload is not base64url');
  if (signature === '' || !B64URL.test(signature)) throw new StepUpTokenError('signature_invalid', 'signature missing or not base64url');
  return { alg: h.alg, kid: h.kid };
}

// ---------------------------------------------------------------------------------------------
// 2. Signature (jose, with the allow-list), iss, aud, exp, nbf, iat

async function checkSignatureAndTimes(token: string, header: KeyLookupHeader, s: Settings): Promise<Record<string, unknown>> {
  try {
    // Our cache is asked for the key of the header checked above (the same kid and alg jose
    // would pass it; jose still checks alg against the allow-list itself). A foreign getter
    // is handed to jose, which calls it with its own parse of the header.
    const key: KeyObject | JWTVerifyGetKey = s.keys.cache === undefined ? s.keys.getter : await s.keys.cache.getKey(header);
    const { payload } = await jwtVerify(token, key, {
      algorithms: JOSE_ALGORITHMS,
      typ: STEPUP_TOKEN_TYP,
      issuer: s.issuer,
      audience: s.audience,
      currentDate: s.clock.now(),
      clockTolerance: s.toleranceSeconds,
      maxTokenAge: s.maxTokenAgeSeconds,
      requiredClaims: REQUIRED_CLAIMS,
    });
    return payload as Record<string, unknown>;
  } catch (err) {
    throw fromJoseError(err);
  }
}

const CLAIM_FAILURE_CODES: Record<string, StepUpTokenError['code']> = {
  iss: 'issuer_invalid',
  aud: 'audience_invalid',
  sub: 'subject_mismatch',
  nbf: 'token_not_yet_valid',
  iat: 'token_not_yet_valid',
  exp: 'token_expired',
  typ: 'typ_invalid',
};

function fromJoseError(err: unknown): unknown {
  if (err instanceof StepUpTokenError || err instanceof VerifierUnavailableError) return err;
  if (!(err instanceof errors.JOSEError)) return err;
  const cause = { cause: err };
  if (err instanceof errors.JWTExpired) return new StepUpTokenError('token_expired', 'token expired', { ...cause, field: err.claim });
  if (err instanceof errors.JWTClaimValidationFailed) {
    const code = err.reason === 'check_failed' ? CLAIM_FAILURE_CODES[err.claim] : undefined;
    return new StepUpTokenError(code ?? 'token_malformed', `claim "${err.claim}" ${err.reason === 'missing' ? 'missing' : 'invalid'}`, {
      ...cause,
      field: err.claim,
    });
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return new StepUpTokenError('alg_not_allowed', 'alg not allowed', { ...cause, field: 'alg' });
  if (err instanceof errors.JWSSignatureVerificationFailed) return new StepUpTokenError('signature_invalid', 'signature does not verify', cause);
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return new StepUpTokenError('kid_unknown', 'no gateway key matches this kid', { ...cause, field: 'kid' });
  }
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) {
    return new VerifierUnavailableError('jwks_unavailable', 'the gateway key source failed', cause);
  }
  // JWSInvalid, JWTInvalid, JOSENotSupported, JWKInvalid…: the token is not something we can verify.
  return new StepUpTokenError('token_malformed', 'token is not a valid JWS/JWT', cause);
}

// ---------------------------------------------------------------------------------------------
// 3. Stepgate's claims: shape, audience, user, assurance, action and exact context

function checkClaims(claims: Record<string, unknown>, s: Settings): asserts claims is StepUpClaims & Record<string, unknown> {
  for (const claim of ['iss', 'sub', 'txn'] as const) {
    if (typeof claims[claim] !== 'string' || claims[claim] === '') throw malformed(`"${claim}" must be a non-empty string`, claim);
  }
  if (typeof claims.jti !== 'string' || claims.jti === '' || claims.jti.length > MAX_JTI_LENGTH) throw malformed('"jti" invalid', 'jti');
  // jose accepts an audience array containing ours; a step-up token is for exactly one service.
  if (claims.aud !== s.audience) throw new StepUpTokenError('audience_invalid', 'aud must be exactly this service', { field: 'aud' });

  const nowSeconds = Math.floor(s.clock.now().getTime() / 1000);
  const authTime = claims.auth_time;
  if (typeof authTime !== 'number' || !Number.isFinite(authTime)) throw malformed('"auth_time" must be a number', 'auth_time');
  if (authTime > nowSeconds + s.toleranceSeconds) {
    throw new StepUpTokenError('token_not_yet_valid', 'auth_time is in the future', { field: 'auth_time' });
  }
  if (s.maxAuthAgeSeconds !== undefined && nowSeconds - authTime > s.maxAuthAgeSeconds + s.toleranceSeconds) {
    throw new StepUpTokenError('auth_too_old', 'the user authenticated too long ago', { field: 'auth_time' });
  }

  if (!isStepUpAcr(claims.acr)) throw new StepUpTokenError('acr_insufficient', 'unknown acr', { field: 'acr' });
  if (s.requiredAcr !== undefined && !acrSatisfies(claims.acr, s.requiredAcr)) {
    throw new StepUpTokenError('acr_insufficient', `acr below ${s.requiredAcr}`, { field: 'acr' });
  }
  const amr = claims.amr;
  if (!Array.isArray(amr) || amr.length === 0 || !amr.every((m) => typeof m === 'string')) throw malformed('"amr" must be an array of strings', 'amr');

  if (claims.sub !== s.expectedSubject) {
    throw new StepUpTokenError('subject_mismatch', 'token was issued for another user', { field: 'sub' });
  }

  const details = claims.authorization_details;
  if (!Array.isArray(details) || details.length !== 1) {
    throw malformed('"authorization_details" must hold exactly one entry', 'authorization_details');
  }
  const detail: unknown = details[0];
  if (typeof detail !== 'object' || detail === null || Array.isArray(detail) || typeof (detail as { type?: unknown }).type !== 'string') {
    throw malformed('"authorization_details[0]" must be an object with a string "type"', 'authorization_details');
  }
  const approved = detail as Record<string, unknown>;
  if (approved.type !== s.expectedAction) {
    throw new StepUpTokenError('action_mismatch', 'token approves another action', { field: 'type' });
  }
  const field = firstContextDifference(s.expectedContext, approved);
  if (field !== undefined) {
    throw new StepUpTokenError('context_mismatch', `context field "${field}" differs from what the user approved`, { field });
  }
  const broken = contextRuleProblem(approved);
  if (broken !== undefined) {
    throw new StepUpTokenError('context_invalid', `context field "${broken.field}" breaks a binding rule: ${broken.reason}`, { field: broken.field });
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Single use: the last step, so only a token that passed everything burns its jti

async function consumeJti(claims: StepUpClaims, s: Settings): Promise<void> {
  // Remember the jti for as long as any check above could still accept the token.
  const acceptedUntil = Math.min(claims.exp, claims.iat + s.maxTokenAgeSeconds) + s.toleranceSeconds + 1;
  let firstUse: boolean;
  try {
    firstUse = await s.replayStore.consume(claims.jti, new Date(acceptedUntil * 1000));
  } catch (cause) {
    throw new VerifierUnavailableError('replay_store_unavailable', 'the replay store could not record the jti', { cause });
  }
  if (firstUse !== true) throw new StepUpTokenError('replayed', 'this token was already used', { field: 'jti' });
}

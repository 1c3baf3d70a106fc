import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { JWTVerifyGetKey } from 'jose';
import { isStepUpAcr, STEPUP_ACR_VALUES, type StepUpAcr } from './acr.ts';
import type { VerifierClock } from './clock.ts';
import type { JsonObject } from './compare-context.ts';
import { StepUpTokenError, VerifierUnavailableError, type StepUpTokenErrorCode } from './errors.ts';
import type { JwksCache } from './jwks-cache.ts';
import type { ReplayStore } from './replay-store.ts';
import { verifyStepUpToken, type StepUpClaims } from './verify-step-up-token.ts';

export interface RequireStepUpOptions {
  issuer: string;
  /** This service's client id at the gateway. */
  audience: string;
  jwks: JwksCache | JWTVerifyGetKey;
  replayStore: ReplayStore;
  /** Minimum acr; also advertised as `acr_values` in the challenge. Required: say what you need. */
  requiredAcr: StepUpAcr;
  /** The action this route performs (`payment_code.issue`). */
  action: string;
  /**
   * Builds the exact context this request is about to act on, from the request (validate the
   * body first: a throw here goes to your error handler, not to a 401).
   */
  context: (req: Request) => JsonObject | Promise<JsonObject>;
  /**
   * The user this request acts for (from your own session). Required: the token's `sub` must
   * equal it, and a request without a user is refused.
   */
  subject: (req: Request) => string | undefined | Promise<string | undefined>;
  /** Reads the token. Default: `Authorization: StepUp <token>`. */
  extractToken?: (req: Request) => string | undefined;
  /** Longest accepted time since the user authenticated (`auth_time`), advertised as `max_age`. Default 300. */
  maxAgeSeconds?: number;
  clock?: VerifierClock;
  clockToleranceSeconds?: number;
  maxTokenAgeSeconds?: number;
  /** Called for every refusal and outage (log it, count it). Must not throw. */
  onRejected?: (err: StepUpTokenError | VerifierUnavailableError, req: Request) => void;
}

/** Problem `code` when the request carries no step-up token at all. */
export const STEP_UP_REQUIRED = 'step_up_required';

const DESCRIPTIONS: Record<StepUpTokenErrorCode | typeof STEP_UP_REQUIRED, string> = {
  step_up_required: 'A step-up token is required for this action',
  token_malformed: 'The step-up token is malformed',
  alg_not_allowed: 'The step-up token algorithm is not accepted',
  typ_invalid: 'The token is not a step-up token',
  header_forbidden: 'The step-up token header is not accepted',
  signature_invalid: 'The step-up token signature is invalid',
  kid_unknown: 'The step-up token was signed with an unknown key',
  issuer_invalid: 'The step-up token was issued by another issuer',
  audience_invalid: 'The step-up token was issued for another service',
  token_expired: 'The step-up token has expired',
  token_not_yet_valid: 'The step-up token is not valid yet',
  auth_too_old: 'A more recent authentication is required',
  acr_insufficient: 'A stronger authentication is required',
  subject_mismatch: 'The step-up token was issued for another user',
  action_mismatch: 'The step-up token approves another action',
  context_mismatch: 'The step-up token approves a different request',
  context_invalid: 'The step-up token approves a request the gateway must refuse',
  replayed: 'The step-up token was already used',
};

/** The claims `requireStepUp` verified for this request. Throws if the middleware did not run. */
export function stepUpClaims(res: Response): StepUpClaims {
  const claims = (res.locals as { stepUp?: StepUpClaims }).stepUp;
  if (claims === undefined) throw new TypeError('res.locals.stepUp is not set: is requireStepUp() in front of this handler?');
  return claims;
}

/** Default extractor: `Authorization: StepUp <token>` (scheme case-insensitive, RFC 9110). */
export function stepUpAuthorization(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^StepUp +([^\s]+) *$/i.exec(header);
  return match?.[1];
}

/**
 * Express middleware guarding a route with a step-up token bound to this request. On success
 * `res.locals.stepUp` holds the claims and the next handler runs; the token's jti is consumed.
 * On a refused token: 401 with an RFC 9470 challenge and a problem+json body carrying the
 * `code` (never a 500). When the JWKS or replay store is down: 503 (fail closed).
 */
export function requireStepUp(options: RequireStepUpOptions): RequestHandler {
  if (!isStepUpAcr(options.requiredAcr)) throw new TypeError(`requiredAcr must be one of ${STEPUP_ACR_VALUES.join(', ')}`);
  if (typeof options.context !== 'function') throw new TypeError('context must be a function of the request');
  if (typeof options.subject !== 'function') throw new TypeError('subject must be a function of the request (the user it acts for)');
  if (typeof options.action !== 'string' || options.action === '') throw new TypeError('action must be a non-empty string');
  const maxAgeSeconds = options.maxAgeSeconds ?? 300;
  if (!Number.isSafeInteger(maxAgeSeconds) || maxAgeSeconds < 0) throw new TypeError('maxAgeSeconds must be a non-negative integer');
  const extract = options.extractToken ?? stepUpAuthorization;
  const challenge = (description: string): string =>
    `Bearer error="insufficient_user_authentication", error_description="${description}", acr_values="${options.requiredAcr}", max_age=${maxAgeSeconds}`;

  const refuse = (res: Response, code: StepUpTokenErrorCode | typeof STEP_UP_REQUIRED, field?: string): void => {
    const description = DESCRIPTIONS[code];
    const problem: Record<string, unknown> = {
      type: `https://stepgate.dev/problems/${code}`,
      title: 'Step-up authentication required',
      status: 401,
      code,
      detail: description,
      acr_values: options.requiredAcr,
      max_age: maxAgeSeconds,
    };
    if ((code === 'context_mismatch' || code === 'context_invalid') && field !== undefined) problem.field = field;
    res.setHeader('WWW-Authenticate', challenge(description));
    res.setHeader('Cache-Control', 'no-store');
    res.status(401).type('application/problem+json').send(JSON.stringify(problem));
  };

  const unavailable = (res: Response, err: VerifierUnavailableError): void => {
    res.setHeader('Retry-After', '5');
    res.setHeader('Cache-Control', 'no-store');
    res
      .status(503)
      .type('application/problem+json')
      .send(
        JSON.stringify({
          type: `https://stepgate.dev/problems/${err.code}`,
          title: 'Step-up verification temporarily unavailable',
          status: 503,
          code: err.code,
        }),
      );
  };

  const report = (err: StepUpTokenError | VerifierUnavailableError, req: Request): void => {
    try {
      options.onRejected?.(err, req);
    } catch {
      // A broken logging hook must not turn a refusal into a 500.
    }
  };

  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    let token: string | undefined;
    try {
      token = extract(req);
    } catch (err) {
      next(err);
      return;
    }
    if (token === undefined || token === '') {
      refuse(res, STEP_UP_REQUIRED);
      return;
    }

    let expectedContext: JsonObject;
    let expectedSubject: string | undefined;
    try {
      expectedContext = await options.context(req);
      expectedSubject = await options.subject(req);
    } catch (err) {
      next(err);
      return;
    }
    if (expectedSubject === undefined || expectedSubject === '') {
      const err = new StepUpTokenError('subject_mismatch', 'the request acts for no user');
      report(err, req);
      refuse(res, err.code);
      return;
    }

    try {
      res.locals.stepUp = await verifyStepUpToken(token, {
        issuer: options.issuer,
        audience: options.audience,
        jwks: options.jwks,
        replayStore: options.replayStore,
        requiredAcr: options.requiredAcr,
        expectedAction: options.action,
        expectedContext,
        maxAuthAgeSeconds: maxAgeSeconds,
        expectedSubject,
        ...(options.clock === undefined ? {} : { clock: options.clock }),
        ...(options.clockToleranceSeconds === undefined ? {} : { clockToleranceSeconds: options.clockToleranceSeconds }),
        ...(options.maxTokenAgeSeconds === undefined ? {} : { maxTokenAgeSeconds: options.maxTokenAgeSeconds }),
      });
    } catch (err) {
      if (err instanceof StepUpTokenError) {
        report(err, req);
        refuse(res, err.code, err.field);
        return;
      }
      if (err instanceof VerifierUnavailableError) {
        report(err, req);
        unavailable(res, err);
        return;
      }
      next(err);
      return;
    }
    next();
  };
}

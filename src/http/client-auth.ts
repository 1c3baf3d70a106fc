import type { NextFunction, Request, RequestHandler, Response } from 'express';
import passport from 'passport';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import {
  type AuthenticatedClient,
  type ClientAuthResult,
  MAX_ASSERTION_LENGTH,
  verifyClientAssertion,
  verifyClientSecret,
} from '../flows/clients.ts';
import type { Gateway } from '../gateway.ts';
import { locals } from './request-context.ts';
import { rateLimitClient } from './rate-limit.ts';

/**
 * Relying-service authentication, as a passport strategy:
 * - `client_secret_basic` (RFC 6749 §2.3.1): `Authorization: Basic base64(urlencode(id):urlencode(secret))`;
 * - `private_key_jwt` (RFC 7523): body fields `client_assertion_type` =
 *   `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and `client_assertion` = a JWT
 *   signed with a key from the client's registered JWKS (ES256, EdDSA or PS256).
 * A request uses exactly one method. Every failure — unknown client, wrong secret, disabled
 * client, bad assertion, replay, garbage — is the same 401 `invalid_client`; the reason only
 * goes to the log.
 */
export const CLIENT_STRATEGY = 'stepgate-client';
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const CHALLENGE = 'Basic realm="stepgate"';
const MAX_AUTHORIZATION_LENGTH = 4096;

/**
 * Spread into the body schema of every client-authenticated JSON route, so private_key_jwt
 * clients can send their assertion (`z.strictObject({ ...clientAssertionFields, … })`).
 * The strategy reads them before the body is validated; the schema only lets them through.
 */
export const clientAssertionFields = {
  client_assertion_type: z.literal(CLIENT_ASSERTION_TYPE).optional(),
  client_assertion: z.string().max(MAX_ASSERTION_LENGTH).optional(),
  /** Optional (RFC 7521 §4.2); when sent it must equal the assertion's `iss`. */
  client_id: z.string().max(128).optional(),
};

/** Set on `res.locals.client` by requireClient. */
export type ClientContext = AuthenticatedClient;

/** The authenticated client of a request that passed requireClient. */
export function clientOf(res: Response): ClientContext {
  const client = (res.locals as { client?: ClientContext }).client;
  if (client === undefined) throw new TypeError('clientOf: route is not behind requireClient');
  return client;
}

type Failure = Extract<ClientAuthResult, { ok: false }>;

function failure(reason: string): Failure {
  return { ok: false, reason };
}

/** Form-urldecoding of one credential part (RFC 6749 Appendix B); undefined on bad escapes. */
function formDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

const BASIC = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i;

export function parseBasicCredentials(header: string): { clientId: string; secret: string } | undefined {
  if (header.length > MAX_AUTHORIZATION_LENGTH) return undefined;
  const m = BASIC.exec(header);
  if (m === null) return undefined;
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  const clientId = formDecode(decoded.slice(0, colon));
  const secret = formDecode(decoded.slice(colon + 1));
  if (clientId === undefined || secret === undefined || clientId === '' || secret === '') return undefined;
  return { clientId, secret };
}

function bodyFields(req: Request): Record<string, unknown> {
  const body: unknown = req.body;
  return typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
}

async function authenticateRequest(gw: Gateway, req: Request): Promise<ClientAuthResult> {
  const header = req.headers.authorization;
  const body = bodyFields(req);
  const hasAssertion = body.client_assertion !== undefined || body.client_assertion_type !== undefined;
  if (header !== undefined && hasAssertion) return failure('more than one client authentication method');
  if (header !== undefined) {
    const credentials = parseBasicCredentials(header);
    if (credentials === undefined) return failure('malformed Basic credentials');
    return verifyClientSecret(gw, credentials.clientId, credentials.secret);
  }
  if (hasAssertion) {
    if (body.client_assertion_type !== CLIENT_ASSERTION_TYPE) return failure('unsupported client_assertion_type');
    if (typeof body.client_assertion !== 'string') return failure('client_assertion is not a string');
    if (body.client_id !== undefined && typeof body.client_id !== 'string') return failure('client_id is not a string');
    return verifyClientAssertion(gw, body.client_assertion, body.client_id as string | undefined);
  }
  return failure('no client credentials');
}

/**
 * The passport strategy. Passport runs it on an object created from this instance
 * (`Object.create`), so its state is a plain property, not a #private field.
 */
export class ClientStrategy extends passport.Strategy {
  override name = CLIENT_STRATEGY;
  readonly gw: Gateway;

  constructor(gw: Gateway) {
    super();
    this.gw = gw;
  }

  override authenticate(req: Request): void {
    authenticateRequest(this.gw, req).then(
      (result) => {
        if (result.ok) this.success(result.client);
        else this.fail({ message: result.reason, ...(result.clientId === undefined ? {} : { clientId: result.clientId }) }, 401);
      },
      (err: unknown) => {
        this.error(err);
      },
    );
  }
}

function safeForLog(clientId: unknown): string | undefined {
  return typeof clientId === 'string' && /^[A-Za-z0-9._~-]{1,64}$/.test(clientId) ? clientId : undefined;
}

/**
 * Middleware: authenticates the relying service or answers 401 `invalid_client` with
 * `WWW-Authenticate: Basic realm="stepgate"`. On success `res.locals.client` (clientOf)
 * holds `{clientId, name, authMethod, allowedActions, redirectUris}`.
 *
 * Each gateway gets its own passport Authenticator: the global one would be shared by every
 * gateway in the process (tests run several) and by unrelated strategies.
 */
export function requireClient(gw: Gateway): RequestHandler {
  const authenticator = new passport.Passport();
  authenticator.use(CLIENT_STRATEGY, new ClientStrategy(gw));
  return (req: Request, res: Response, next: NextFunction): void => {
    const callback = (err: unknown, client: ClientContext | false | undefined, info?: { message?: string; clientId?: string }) => {
      if (err !== null && err !== undefined) {
        next(err);
        return;
      }
      if (client === false || client === undefined) {
        gw.logger.info(
          { requestId: locals(res).requestId, clientId: safeForLog(info?.clientId), reason: info?.message },
          'client authentication failed',
        );
        res.setHeader('WWW-Authenticate', CHALLENGE);
        next(new AppError('invalid_client'));
        return;
      }
      (res.locals as { client?: ClientContext }).client = client;
      rateLimitClient(gw, res, client.clientId).then(() => next(), next);
    };
    authenticator.authenticate(CLIENT_STRATEGY, { session: false }, callback)(req, res, next);
  };
}

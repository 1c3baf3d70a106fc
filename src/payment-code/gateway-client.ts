import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { type CryptoKey, importJWK, type JWK, SignJWT } from 'jose';
import type { VerifierClock } from '../verifier/index.ts';
import { type InvalidParam, PaymentCodeError } from './errors.ts';
import type { Logger } from './logger.ts';

/**
 * The gateway's step-up API, as any relying service calls it: over HTTP, authenticated as a
 * registered client with client_secret_basic (RFC 6749 §2.3.1) or private_key_jwt (RFC 7523).
 * Nothing here knows the gateway's internals; the contract is docs/relying-party.md.
 */
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export type ClientAuth =
  | { method: 'client_secret_basic'; clientId: string; secret: string }
  | { method: 'private_key_jwt'; clientId: string; key: CryptoKey; alg: 'EdDSA' | 'ES256'; kid: string | undefined };

export interface GatewayClientOptions {
  baseUrl: string;
  /** The gateway's issuer: the `aud` of our client assertions. */
  issuer: string;
  auth: ClientAuth;
  timeoutSeconds: number;
  clock: VerifierClock;
  logger: Logger;
  /** Instead of node:http (tests that stand between P and the gateway). */
  fetch?: typeof fetch;
}

export interface StepUpRequest {
  subject: string;
  action: string;
  context: Record<string, string | number | boolean>;
  bindingMessage: string;
  redirectUri?: string;
  state?: string;
}

export interface CreatedStepUp {
  stepupId: string;
  ticket: string;
  userUrl: string;
  expiresIn: number;
  interval: number;
  acr: string;
  options: string[][];
}

export type TokenPoll =
  | { status: 'issued'; token: string; expiresIn: number }
  | { status: 'pending'; code: 'authorization_pending' | 'slow_down'; retryAfterSeconds: number }
  | { status: 'failed'; code: string };

/** Reads a private JWK (Ed25519 or P-256) for private_key_jwt. Misconfiguration is a TypeError at start-up. */
export async function loadClientKey(file: string): Promise<{ key: CryptoKey; alg: 'EdDSA' | 'ES256'; kid: string | undefined }> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
  } catch (err) {
    throw new TypeError(`cannot read the client key file ${file}: ${(err as Error).message}`);
  }
  if (typeof jwk.d !== 'string') throw new TypeError(`${file} must hold a private JWK (with "d")`);
  const alg = jwk.kty === 'OKP' && jwk.crv === 'Ed25519' ? 'EdDSA' : jwk.kty === 'EC' && jwk.crv === 'P-256' ? 'ES256' : undefined;
  if (alg === undefined) throw new TypeError(`${file}: the client key must be Ed25519 (OKP) or P-256 (EC)`);
  const key = (await importJWK(jwk, alg)) as CryptoKey;
  return { key, alg, kid: typeof jwk.kid === 'string' ? jwk.kid : undefined };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The gateway's field pointers, translated to this service's request (best effort, never a secret). */
function translatePointers(params: unknown, pointerMap: (pointer: string) => string): InvalidParam[] {
  if (!Array.isArray(params)) return [];
  return params.filter(isRecord).map((p) => ({ pointer: pointerMap(String(p.pointer ?? '')), reason: String(p.reason ?? 'invalid') }));
}

/** The most of a gateway answer we read (its answers are small JSON objects). */
const MAX_ANSWER_BYTES = 1024 * 1024;

interface Answer {
  status: number;
  text: string;
  retryAfter: string | null;
}

interface Post {
  (url: string, headers: Record<string, string>, body: string, timeoutMs: number): Promise<Answer>;
  close?: () => void;
}

function fetchPost(f: typeof fetch): Post {
  return async (url, headers, body, timeoutMs) => {
    const response = await f(url, { method: 'POST', headers, body, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) });
    return { status: response.status, text: await response.text(), retryAfter: response.headers.get('retry-after') };
  };
}

/**
 * POST over node:http(s) on kept-alive connections. fetch (undici) costs several times the
 * CPU of node:http per call, and P calls the gateway twice per code. Same contract as the
 * fetch it replaces: no redirects followed (a 3xx is an error), the whole exchange bounded
 * by the timeout, TLS verified by Node's defaults.
 */
function nodeHttpPost(): Post {
  const agents = { 'http:': new HttpAgent({ keepAlive: true }), 'https:': new HttpsAgent({ keepAlive: true }) };
  const post: Post = (url, headers, body, timeoutMs) =>
    new Promise<Answer>((resolve, reject) => {
      const target = new URL(url);
      if (target.protocol !== 'http:' && target.protocol !== 'https:') {
        reject(new TypeError(`unsupported protocol ${target.protocol}`));
        return;
      }
      const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
      const payload = Buffer.from(body, 'utf8');
      const req = send(target, { method: 'POST', agent: agents[target.protocol], headers: { ...headers, 'content-length': String(payload.length) } }, (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400) {
          res.resume();
          req.destroy(new Error(`the gateway answered a redirect (${status}), which is not followed`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) req.destroy(new Error('the gateway answer is too large'));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          const retryAfter = res.headers['retry-after'];
          resolve({ status, text: Buffer.concat(chunks).toString('utf8'), retryAfter: typeof retryAfter === 'string' ? retryAfter : null });
        });
        res.on('error', reject);
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer from the gateway within ${timeoutMs} ms`)), timeoutMs);
      req.on('close', () => clearTimeout(timer));
      req.on('error', reject);
      req.end(payload);
    });
  post.close = () => {
    agents['http:'].destroy();
    agents['https:'].destroy();
  };
  return post;
}

export class GatewayClient {
  readonly #options: GatewayClientOptions;
  readonly #send: Post;

  constructor(options: GatewayClientOptions) {
    this.#options = options;
    this.#send = options.fetch === undefined ? nodeHttpPost() : fetchPost(options.fetch);
  }

  /** Closes kept-alive connections (the service is stopping). */
  close(): void {
    this.#send.close?.();
  }

  get clientId(): string {
    return this.#options.auth.clientId;
  }

  async #authenticate(body: Record<string, unknown>): Promise<{ headers: Record<string, string>; body: Record<string, unknown> }> {
    const auth = this.#options.auth;
    if (auth.method === 'client_secret_basic') {
      const credentials = `${encodeURIComponent(auth.clientId)}:${encodeURIComponent(auth.secret)}`;
      return { headers: { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` }, body };
    }
    const iat = Math.floor(this.#options.clock.now().getTime() / 1000);
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: auth.alg, typ: 'JWT', ...(auth.kid === undefined ? {} : { kid: auth.kid }) })
      .setIssuer(auth.clientId)
      .setSubject(auth.clientId)
      .setAudience(this.#options.issuer)
      .setIssuedAt(iat)
      .setExpirationTime(iat + 60)
      .setJti(randomBytes(16).toString('base64url'))
      .sign(auth.key);
    return { headers: {}, body: { ...body, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion } };
  }

  async #post(path: string, payload: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown>; retryAfter: string | null }> {
    const { headers, body } = await this.#authenticate(payload);
    let answer: Answer;
    try {
      answer = await this.#send(`${this.#options.baseUrl}${path}`, { 'content-type': 'application/json', accept: 'application/json', ...headers }, JSON.stringify(body), this.#options.timeoutSeconds * 1000);
    } catch (cause) {
      this.#options.logger.error({ path, err: (cause as Error).message }, 'gateway unreachable');
      throw new PaymentCodeError('gateway_unavailable', { retryAfterSeconds: 5, cause });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(answer.text);
    } catch {
      parsed = {};
    }
    return { status: answer.status, body: isRecord(parsed) ? parsed : {}, retryAfter: answer.retryAfter };
  }

  /** Asks the gateway for a step-up bound to exactly `context`. */
  async createStepUp(request: StepUpRequest, pointerMap: (pointer: string) => string): Promise<CreatedStepUp> {
    const { status, body } = await this.#post('/v1/stepup', {
      subject: request.subject,
      action: request.action,
      context: request.context,
      binding_message: request.bindingMessage,
      ...(request.redirectUri === undefined ? {} : { redirect_uri: request.redirectUri }),
      ...(request.state === undefined ? {} : { state: request.state }),
    });
    if (status === 201 && typeof body.stepup_id === 'string' && typeof body.ticket === 'string' && typeof body.user_url === 'string') {
      return {
        stepupId: body.stepup_id,
        ticket: body.ticket,
        userUrl: body.user_url,
        expiresIn: Number(body.expires_in),
        interval: Number(body.interval),
        acr: String(body.acr),
        options: Array.isArray(body.options) ? (body.options as string[][]) : [],
      };
    }
    const code = typeof body.code === 'string' ? body.code : '';
    const detail = typeof body.detail === 'string' ? body.detail : undefined;
    if (code === 'enrollment_required') throw new PaymentCodeError('enrollment_required', detail === undefined ? {} : { detail });
    if (code === 'access_denied') throw new PaymentCodeError('access_denied', { detail: 'No gateway policy allows this request.' });
    if (status === 400 && (code === 'validation_failed' || code === 'currency_unsupported' || code === 'amount_precision_exceeded' || code === 'amount_not_canonical')) {
      const invalidParams = translatePointers(body.invalid_params, pointerMap);
      throw new PaymentCodeError(code, { detail: 'The gateway refused the request.', invalidParams });
    }
    // invalid_client, forbidden (action not registered for us), 5xx: our set-up is wrong or the gateway is down.
    this.#options.logger.error({ status, reason: code }, 'gateway refused the step-up request');
    throw new PaymentCodeError('gateway_unavailable', { retryAfterSeconds: 5, detail: 'The authentication gateway refused this service.' });
  }

  /** One poll of the token endpoint (the token is handed out once). */
  async pollToken(stepupId: string): Promise<TokenPoll> {
    const { status, body, retryAfter } = await this.#post(`/v1/stepup/${encodeURIComponent(stepupId)}/token`, {});
    if (status === 200 && typeof body.step_up_token === 'string') {
      return { status: 'issued', token: body.step_up_token, expiresIn: Number(body.expires_in) };
    }
    const code = typeof body.code === 'string' ? body.code : `http_${status}`;
    if (code === 'authorization_pending' || code === 'slow_down') {
      const seconds = Number(retryAfter ?? '2');
      return { status: 'pending', code, retryAfterSeconds: Number.isFinite(seconds) && seconds > 0 ? seconds : 2 };
    }
    if (['expired_token', 'access_denied', 'invalid_grant', 'stepup_not_found', 'forbidden'].includes(code)) return { status: 'failed', code };
    this.#options.logger.error({ status, reason: code }, 'gateway token endpoint failed');
    throw new PaymentCodeError('gateway_unavailable', { retryAfterSeconds: 5 });
  }
}

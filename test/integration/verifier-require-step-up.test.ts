import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import request from 'supertest';
import { FixedClock } from '../../src/clock.ts';
import {
  createJwksCache,
  MemoryReplayStore,
  requireStepUp,
  stepUpClaims,
  type JsonObject,
  type RequireStepUpOptions,
} from '../../src/verifier/index.ts';
import { serveJwks, TEST_ACTION, TEST_AUDIENCE, TEST_CONTEXT, TEST_ISSUER, TEST_SUBJECT, TokenMinter, unsigned, type JwksServer } from '../helpers/token-minter.ts';

const T0 = Date.UTC(2026, 2, 1, 8, 0, 0);
const clock = new FixedClock(T0);
let minter: TokenMinter;
let server: JwksServer;

before(async () => {
  minter = await TokenMinter.create({ now: () => clock.now() });
  server = await serveJwks(() => minter.jwks());
});
after(async () => {
  await server.close();
});

const CHALLENGE = /^Bearer error="insufficient_user_authentication", error_description="[^"\\]+", acr_values="urn:stepgate:aal2", max_age=300$/;

class BadRequest extends Error {}

/** The body a wallet sends to the payment-code service: validated before the context is built. */
function contextFromBody(req: Request): JsonObject {
  const body = req.body as Record<string, unknown> | undefined;
  const out: JsonObject = {};
  for (const field of ['amount', 'currency', 'payee', 'deviceId']) {
    const value = body?.[field];
    if (typeof value !== 'string') throw new BadRequest(`${field} is required`);
    out[field] = value;
  }
  return out;
}

function paymentCodeService(overrides: Partial<RequireStepUpOptions> = {}) {
  const rejected: string[] = [];
  const replayStore = new MemoryReplayStore({ clock });
  const app = express();
  app.use(express.json());
  app.post(
    '/payment-codes',
    requireStepUp({
      issuer: TEST_ISSUER,
      audience: TEST_AUDIENCE,
      jwks: createJwksCache({ jwksUri: server.url, clock }),
      replayStore,
      clock,
      requiredAcr: 'urn:stepgate:aal2',
      action: TEST_ACTION,
      context: contextFromBody,
      subject: (req) => req.get('x-wallet-user') ?? undefined,
      onRejected: (err) => {
        rejected.push(err.code);
      },
      ...overrides,
    }),
    (_req: Request, res: Response) => {
      const claims = stepUpClaims(res);
      res.status(201).json({ code: '28 1234 5678 9012 3456', sub: claims.sub, txn: claims.txn, acr: claims.acr });
    },
  );
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    res.status(err instanceof BadRequest ? 400 : 500).json({ error: String(err) });
  });
  return { app, rejected, replayStore };
}

function post(app: express.Express, token: string | undefined, body: Record<string, unknown> = { ...TEST_CONTEXT }, user = TEST_SUBJECT) {
  let req = request(app).post('/payment-codes').set('x-wallet-user', user);
  if (token !== undefined) req = req.set('Authorization', `StepUp ${token}`);
  return req.send(body);
}

function assertRefused(res: request.Response, code: string): void {
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.match(res.headers['www-authenticate'] ?? '', CHALLENGE);
  assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json/);
  assert.equal(res.headers['cache-control'], 'no-store');
  const problem = JSON.parse(res.text) as { code: string; status: number; type: string };
  assert.equal(problem.code, code);
  assert.equal(problem.status, 401);
  assert.equal(problem.type, `https://stepgate.dev/problems/${code}`);
}

beforeEach(() => {
  clock.set(T0);
});

describe('requireStepUp', () => {
  it('answers 401 with the exact RFC 9470 challenge when no token is presented', async () => {
    const { app } = paymentCodeService();
    const res = await post(app, undefined);
    assertRefused(res, 'step_up_required');
    assert.equal(
      res.headers['www-authenticate'],
      'Bearer error="insufficient_user_authentication", error_description="A step-up token is required for this action", acr_values="urn:stepgate:aal2", max_age=300',
    );
    // Another scheme is not a step-up token.
    assertRefused(await request(app).post('/payment-codes').set('Authorization', 'Bearer abc').send(TEST_CONTEXT), 'step_up_required');
    assertRefused(await request(app).post('/payment-codes').set('Authorization', 'StepUp ').send(TEST_CONTEXT), 'step_up_required');
  });

  it('runs the handler with the claims for a good token, once', async () => {
    const { app } = paymentCodeService();
    const token = await minter.mint();
    const ok = await post(app, token);
    assert.equal(ok.status, 201, ok.text);
    assert.equal(ok.body.sub, TEST_SUBJECT);
    assert.equal(ok.body.acr, 'urn:stepgate:aal2');
    assert.match(ok.body.txn, /^stp_/);
    assertRefused(await post(app, token), 'replayed');
  });

  it('accepts the scheme case-insensitively', async () => {
    const { app } = paymentCodeService();
    const res = await request(app)
      .post('/payment-codes')
      .set('x-wallet-user', TEST_SUBJECT)
      .set('Authorization', `stepup ${await minter.mint()}`)
      .send(TEST_CONTEXT);
    assert.equal(res.status, 201, res.text);
  });

  it('refuses bad tokens with 401 and their code, never 500', async () => {
    const { app, rejected } = paymentCodeService();
    const good = await minter.mint();
    const [h, p, s = ''] = good.split('.');
    const flipped = `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
    const cases: [string, string][] = [
      ['garbage', 'token_malformed'],
      ['a.b.c', 'token_malformed'],
      [flipped, 'signature_invalid'],
      [`${h}.${p}.`, 'signature_invalid'],
      [unsigned({ ...minter.defaultHeader(), alg: 'none' }, minter.defaultClaims()), 'alg_not_allowed'],
      [await minter.mint({ header: { jwk: minter.key.publicJwk } }), 'header_forbidden'],
      [await minter.mint({ claims: { acr: 'urn:stepgate:aal1' } }), 'acr_insufficient'],
      [await minter.mint({ claims: { aud: 'client_other' } }), 'audience_invalid'],
      [await minter.mint({ header: { typ: 'JWT' } }), 'typ_invalid'],
      [await minter.mint({ claims: { auth_time: Math.floor(T0 / 1000) - 301 - 5 } }), 'auth_too_old'],
    ];
    for (const [token, code] of cases) assertRefused(await post(app, token), code);
    assert.deepEqual(
      rejected,
      cases.map(([, code]) => code),
    );
  });

  it('refuses a token approving a different amount, naming the field', async () => {
    const { app } = paymentCodeService();
    const token = await minter.mint();
    const res = await post(app, token, { ...TEST_CONTEXT, amount: '1200.00' });
    assertRefused(res, 'context_mismatch');
    assert.equal(JSON.parse(res.text).field, 'amount');
    // The refusal did not burn the token: the request it was made for still goes through.
    assert.equal((await post(app, token)).status, 201);
  });

  it('refuses a token for another user, and a request with no user', async () => {
    const { app } = paymentCodeService();
    assertRefused(await post(app, await minter.mint(), TEST_CONTEXT, 'usr_bob'), 'subject_mismatch');
    const res = await request(app)
      .post('/payment-codes')
      .set('Authorization', `StepUp ${await minter.mint()}`)
      .send(TEST_CONTEXT);
    assertRefused(res, 'subject_mismatch');
  });

  it('accepts exactly one of two concurrent presentations', async () => {
    const { app } = paymentCodeService();
    const token = await minter.mint();
    const results = await Promise.all([post(app, token), post(app, token), post(app, token)]);
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 401, 401]);
    for (const r of results.filter((x) => x.status === 401)) assertRefused(r, 'replayed');
  });

  it('leaves invalid request bodies to the application (400, not 401 or 500)', async () => {
    const { app } = paymentCodeService();
    const res = await post(app, await minter.mint(), { amount: 120 });
    assert.equal(res.status, 400);
  });

  it('answers 503 (fail closed) when the gateway JWKS cannot be fetched', async () => {
    const { app } = paymentCodeService({ jwks: createJwksCache({ jwksUri: 'http://127.0.0.1:9/jwks.json', clock }) });
    const res = await post(app, await minter.mint());
    assert.equal(res.status, 503);
    assert.equal(JSON.parse(res.text).code, 'jwks_unavailable');
    assert.equal(res.headers['retry-after'], '5');
  });

  it('supports a custom token extractor and a throwing onRejected hook', async () => {
    const { app } = paymentCodeService({
      extractToken: (req) => req.get('stepup-token') ?? undefined,
      onRejected: () => {
        throw new Error('broken logger');
      },
    });
    const token = await minter.mint();
    const send = (t: string) => request(app).post('/payment-codes').set('x-wallet-user', TEST_SUBJECT).set('stepup-token', t).send(TEST_CONTEXT);
    assert.equal((await send(token)).status, 201);
    assertRefused(await send(token), 'replayed');
  });

  it('advertises its own acr and max_age', async () => {
    const { app } = paymentCodeService({ requiredAcr: 'urn:stepgate:aal3', maxAgeSeconds: 60 });
    const res = await post(app, await minter.mint());
    assert.equal(res.status, 401);
    assert.equal(
      res.headers['www-authenticate'],
      'Bearer error="insufficient_user_authentication", error_description="A stronger authentication is required", acr_values="urn:stepgate:aal3", max_age=60',
    );
  });

  it('rejects misconfiguration at start-up', () => {
    const base = { issuer: TEST_ISSUER, audience: TEST_AUDIENCE, jwks: createJwksCache({ jwksUri: server.url }), replayStore: new MemoryReplayStore(), action: TEST_ACTION, context: () => ({}), subject: () => 'usr_x' };
    assert.throws(() => requireStepUp({ ...base } as unknown as RequireStepUpOptions), TypeError);
    const { subject: _s, ...noSubject } = base;
    assert.throws(() => requireStepUp({ ...noSubject, requiredAcr: 'urn:stepgate:aal2' } as unknown as RequireStepUpOptions), TypeError, 'the subject check cannot be left out');
    assert.throws(() => requireStepUp({ ...base, requiredAcr: 'aal2' } as unknown as RequireStepUpOptions), TypeError);
    assert.throws(() => requireStepUp({ ...base, requiredAcr: 'urn:stepgate:aal2', action: '' }), TypeError);
    assert.throws(() => requireStepUp({ ...base, requiredAcr: 'urn:stepgate:aal2', maxAgeSeconds: -1 }), TypeError);
  });
});

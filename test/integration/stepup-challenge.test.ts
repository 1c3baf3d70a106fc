import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { AppError } from '../../src/errors/app-error.ts';
import { type Factor, type FactorRecord, factorRegistry, type FactorRegistry } from '../../src/factors/factor.ts';
import { newId } from '../../src/crypto/ids.ts';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { listen, makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The challenge framework, exercised with a test-only challenge factor registered under the
 * `sms_otp` id: it "sends" a random code to a capturing outbox and keeps only its hash in
 * the challenge state. The real SMS factor plugs into exactly this.
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '88.00', currency: 'CNY', payee: 'shop-9' };

interface Sent {
  stepupId: string;
  factorId: string;
  code: string;
}

function claimsSub(token: string): string {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).sub as string;
}

function hash(code: string): string {
  return createHash('sha256').update(code).digest('hex');
}

function testChallengeFactor(outbox: Sent[], failNext: { value: boolean }): Factor<{ code: string }> {
  return {
    type: 'sms_otp',
    descriptor: { kind: 'challenge', amr: ['sms'], possession: true, multiple: true, challenge: { ttlSeconds: 300, maxAttempts: 5, resendCooldownSeconds: 60, maxSends: 3 } },
    async startChallenge(records: readonly FactorRecord[], ctx) {
      const target = records[0]!;
      if (failNext.value) {
        failNext.value = false;
        throw new AppError('service_unavailable', { retryAfterSeconds: 10 });
      }
      const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
      outbox.push({ stepupId: ctx.purpose.stepupId, factorId: target.id, code });
      return { publicData: { destination: '+86 ••• 0000' }, state: { codeHash: hash(`${ctx.purpose.stepupId}:${code}`), stepupId: ctx.purpose.stepupId }, factorId: target.id };
    },
    resolveFactor(records, _input, challenge) {
      return records.find((r) => r.id === challenge?.factorId);
    },
    async verify(_record, input, ctx) {
      const state = ctx.challenge?.state;
      if (state === undefined) return { ok: false, reason: 'invalid' };
      const ok = hash(`${String(state.stepupId)}:${String((input as { code?: unknown }).code)}`) === state.codeHash;
      return ok ? { ok: true, amr: ['sms'] } : { ok: false, reason: 'invalid' };
    },
  };
}

for (const dialect of testDialects()) {
  describe(`step-up challenges (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    const outbox: Sent[] = [];
    const failNext = { value: false };

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 1 } } });
      (tg.gw as { factors: FactorRegistry }).factors = factorRegistry(...[...tg.gw.factors.values()].filter((f) => f.type !== 'sms_otp'), testChallengeFactor(outbox, failNext) as Factor);
      await setPolicies(tg.gw, [{ id: 'sms', action: ACTION, priority: 10, require: { anyOf: [['sms_otp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 }]);
      const user = await makeUser(tg.gw, 'carol');
      const now = tg.clock.now().getTime();
      await tg.gw.store.db.insertInto('factors').values({ id: newId('fac'), user_id: user.id, type: 'sms_otp', label: 'phone', status: 'active', secret_hash: null, secret_sealed: null, params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null }).execute();
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });
    beforeEach(() => {
      outbox.length = 0;
      failNext.value = false;
    });

    async function create() {
      const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'carol', action: ACTION, context: CONTEXT, binding_message: 'Pay 88.00 CNY to shop-9' });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { stepup_id: string; ticket: string };
    }
    const challenge = (s: { stepup_id: string; ticket: string }, body: Record<string, unknown> = { factor: 'sms_otp' }) =>
      tg.http().post(`/v1/stepup/${s.stepup_id}/challenge`).set('Authorization', `Ticket ${s.ticket}`).send(body);
    const verify = (s: { stepup_id: string; ticket: string }, code: string) =>
      tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'sms_otp', code });
    const wrong = (code: string) => (code === '000000' ? '000001' : '000000');

    it('start → code sent → verify completes; the client gets a token the verifier accepts', async () => {
      const s = await create();
      const started = await challenge(s);
      assert.equal(started.status, 200, JSON.stringify(started.body));
      assert.equal(started.body.factor, 'sms_otp');
      assert.equal(started.body.destination, '+86 ••• 0000');
      assert.equal(started.body.expires_in, 300);
      assert.equal(started.body.resend_after, 60);
      assert.equal(outbox.length, 1);
      const ok = await verify(s, outbox[0]!.code);
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.deepEqual(ok.body, { status: 'completed', completed: true, remaining: [] });
      tg.clock.advance(2);
      const tok = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
      assert.equal(tok.status, 200);
      const server = await listen(tg.app);
      try {
        const claims = await verifyStepUpToken(tok.body.step_up_token, {
          issuer: 'http://localhost:8080', audience: pay.clientId, jwks: createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json` }),
          requiredAcr: 'urn:stepgate:aal2', expectedSubject: claimsSub(tok.body.step_up_token), expectedAction: ACTION, expectedContext: CONTEXT, replayStore: new MemoryReplayStore(), clock: { now: () => tg.clock.now() },
        });
        assert.deepEqual(claims.amr, ['sms']);
      } finally {
        await server.close();
      }
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('type').where('type', 'like', 'stepup.challenge%').execute();
      assert.ok(audit.some((a) => a.type === 'stepup.challenge_sent'));
      // The code never reaches the audit log or the logs.
      const data = await tg.gw.store.db.selectFrom('audit_log').select('data').execute();
      assert.ok(!data.some((d) => d.data.includes(outbox[0]!.code)));
      assert.ok(!tg.logs.text.includes(outbox[0]!.code));
    });

    it('verify without a challenge asks for one; nothing is charged', async () => {
      const s = await create();
      const res = await verify(s, '123456');
      assert.equal(res.status, 400);
      assert.equal(res.body.code, 'challenge_required');
      const row = await tg.gw.store.db.selectFrom('stepups').select('attempts').where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.equal(row.attempts, 0);
    });

    it('a resend waits for the cooldown (429 + Retry-After), then sends a new code; the old one stops working', async () => {
      const s = await create();
      assert.equal((await challenge(s)).status, 200);
      tg.clock.advance(20);
      const early = await challenge(s);
      assert.equal(early.status, 429);
      assert.equal(early.body.code, 'challenge_cooldown');
      assert.equal(early.headers['retry-after'], '40');
      assert.equal(outbox.length, 1);
      tg.clock.advance(40);
      assert.equal((await challenge(s)).status, 200);
      assert.equal(outbox.length, 2);
      const [first, second] = outbox;
      if (first!.code !== second!.code) assert.equal((await verify(s, first!.code)).body.code, 'factor_invalid');
      assert.equal((await verify(s, second!.code)).status, 200);
    });

    it('a resend never resets the attempt count: the 6th guess is refused even with the right code', async () => {
      // The transaction allows more attempts than one challenge does, so the challenge limit is what stops it.
      const s = await create();
      await tg.gw.store.db.updateTable('stepups').set({ max_attempts: 20 }).where('id', '=', s.stepup_id).execute();
      assert.equal((await challenge(s)).status, 200);
      const code1 = outbox[0]!.code;
      for (let i = 0; i < 3; i += 1) assert.equal((await verify(s, wrong(code1))).body.code, 'factor_invalid');
      tg.clock.advance(61);
      assert.equal((await challenge(s)).status, 200);
      const code2 = outbox[1]!.code;
      for (let i = 0; i < 2; i += 1) assert.equal((await verify(s, wrong(code2))).body.code, 'factor_invalid');
      const sixth = await verify(s, code2);
      assert.equal(sixth.status, 429);
      assert.equal(sixth.body.code, 'challenge_attempts_exhausted');
      // And no further challenge can be started for it.
      tg.clock.advance(61);
      assert.equal((await challenge(s)).body.code, 'challenge_attempts_exhausted');
      assert.equal(outbox.length, 2);
    });

    it('expires with its ttl: at +300 s + 1 the right code asks for a new challenge', async () => {
      const s = await create();
      await tg.gw.store.db.updateTable('stepups').set({ expires_at: tg.clock.now().getTime() + 600_000 }).where('id', '=', s.stepup_id).execute();
      assert.equal((await challenge(s)).status, 200);
      tg.clock.advance(301);
      const res = await verify(s, outbox[0]!.code);
      assert.equal(res.body.code, 'challenge_required');
    });

    it('a code is bound to its step-up: the code of A fails on B', async () => {
      const a = await create();
      const b = await create();
      await challenge(a);
      await challenge(b);
      const codeA = outbox.find((o) => o.stepupId === a.stepup_id)!.code;
      const codeB = outbox.find((o) => o.stepupId === b.stepup_id)!.code;
      if (codeA !== codeB) assert.equal((await verify(b, codeA)).body.code, 'factor_invalid');
      assert.equal((await verify(b, codeB)).status, 200);
    });

    it('a failed send leaves nothing usable and can be retried at once', async () => {
      const s = await create();
      assert.equal((await challenge(s)).status, 200);
      const before = outbox[0]!.code;
      tg.clock.advance(61);
      failNext.value = true;
      const failed = await challenge(s);
      assert.equal(failed.status, 503);
      assert.equal(failed.body.code, 'service_unavailable');
      assert.ok(failed.headers['retry-after']);
      // Even the previously sent code is no longer usable.
      assert.equal((await verify(s, before)).body.code, 'challenge_required');
      const retry = await challenge(s);
      assert.equal(retry.status, 200, JSON.stringify(retry.body));
      assert.equal((await verify(s, outbox[1]!.code)).status, 200);
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('type').where('type', '=', 'stepup.challenge_failed').execute();
      assert.ok(audit.length >= 1);
    });

    it('10 concurrent starts send exactly one code', async () => {
      const s = await create();
      const results = await Promise.all(Array.from({ length: 10 }, () => challenge(s)));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.status).join(','));
      assert.ok(results.every((r) => r.status === 200 || r.body.code === 'challenge_cooldown'));
      assert.equal(outbox.length, 1);
    });

    it('20 concurrent submissions of the right code: exactly one success, and the challenge is spent', async () => {
      const s = await create();
      await tg.gw.store.db.updateTable('stepups').set({ max_attempts: 50 }).where('id', '=', s.stepup_id).execute();
      await challenge(s);
      const code = outbox[0]!.code;
      const results = await Promise.all(Array.from({ length: 20 }, () => verify(s, code)));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => `${r.status}:${r.body.code}`).join(','));
      const row = await tg.gw.store.db.selectFrom('factor_challenges').selectAll().where('stepup_id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.notEqual(row.consumed_at, null);
    });

    it('rejects bad challenge input with a pointer, and factors the step-up does not accept', async () => {
      const s = await create();
      const bad = await challenge(s, { factor: 'sms_otp', extra: 1 });
      assert.equal(bad.status, 400);
      assert.equal(bad.headers['content-type'], 'application/problem+json; charset=utf-8');
      const notAllowed = await challenge(s, { factor: 'webauthn' });
      assert.equal(notAllowed.status, 400);
      assert.equal(notAllowed.body.code, 'factor_not_allowed');
      const wrongTicket = await tg.http().post(`/v1/stepup/${s.stepup_id}/challenge`).set('Authorization', 'Ticket AAAAAAAAAAAAAAAAAAAAAAAA').send({ factor: 'sms_otp' });
      assert.equal(wrongTicket.status, 401);
      assert.equal(outbox.length, 0);
    });
  });
}

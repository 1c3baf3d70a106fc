import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SmsSendError } from '../../src/sms/sms-sender.ts';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { type FakeHttpServer, fakeHttpServer } from '../helpers/fake-http.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { addPhone, captureSms, codeInText, type SmsCapture } from '../helpers/sms.ts';
import { listen, makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * SMS codes as a step-up factor, through the public API: the code is read from what was
 * "sent" (a capturing sender, or the fake provider's request), never computed.
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '120.00', currency: 'CNY', payee: 'shop-42', deviceId: 'dev-1' };
const PHONE = '+8613800138000';
const BIG = { hour: 10_000, day: 10_000 };
const ROOMY_CAPS = { perNumber: BIG, perUser: BIG, perCountryCode: BIG, global: BIG };
const POLICY = [{ id: 'sms', action: ACTION, priority: 10, require: { anyOf: [['sms_otp']] }, acr: 'urn:stepgate:aal2' as const, tokenTtlSeconds: 120 }];

type Created = { stepup_id: string; ticket: string };

function api(tg: TestGateway, pay: { basic: string }) {
  return {
    async create(subject: string, context: Record<string, unknown> = CONTEXT): Promise<Created> {
      const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject, action: ACTION, context, binding_message: 'Pay 120.00 CNY to shop-42' });
      assert.equal(res.status, 201, res.text);
      return res.body as Created;
    },
    challenge(s: Created, body: Record<string, unknown> = { factor: 'sms_otp' }, lang = 'en') {
      return tg.http().post(`/v1/stepup/${s.stepup_id}/challenge`).set('Authorization', `Ticket ${s.ticket}`).set('Accept-Language', lang).send(body);
    },
    verify(s: Created, code: string) {
      return tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'sms_otp', code });
    },
  };
}

const wrong = (code: string) => (code === '000000' ? '000001' : '000000');

for (const dialect of testDialects()) {
  describe(`SMS codes in step-up (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let sms: SmsCapture;
    let a: ReturnType<typeof api>;
    let userId: string;
    let phoneId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 1, maxAttempts: 20 }, sms: { caps: ROOMY_CAPS } } });
      await setPolicies(tg.gw, POLICY);
      userId = (await makeUser(tg.gw, 'alice')).id;
      phoneId = await addPhone(tg.gw, userId, PHONE);
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
      sms = captureSms(tg.gw);
      a = api(tg, pay);
    });
    after(async () => {
      await tg.close();
    });

    // Tests that guess wrong get their own user and phone: the factor's failure counter
    // (lockout after factors.maxFailures, shared by all step-ups) must not spill between tests.
    let users = 0;
    async function ownUser(): Promise<string> {
      users += 1;
      const name = `user${users}`;
      await addPhone(tg.gw, (await makeUser(tg.gw, name)).id, PHONE);
      return name;
    }

    it('end to end: send a code, enter it, get a token that src/verifier accepts (amr sms, aal2)', async () => {
      const s = await a.create('alice');
      const started = await a.challenge(s);
      assert.equal(started.status, 200, started.text);
      assert.deepEqual(started.body, { destination: '+86 138****8000', code_length: 6, factor: 'sms_otp', factor_id: phoneId, expires_in: 300, resend_after: 60 });
      const message = sms.last();
      assert.equal(message.to, PHONE);
      assert.equal(message.purpose, 'stepup');
      assert.match(message.text, /^Stepgate: code \d{6} approves a payment of 120\.00 CNY to shop-42\. Valid for 5 min\./);
      const code = sms.lastCode();
      const ok = await a.verify(s, code);
      assert.equal(ok.status, 200, ok.text);
      assert.deepEqual(ok.body, { status: 'completed', completed: true, remaining: [] });
      tg.clock.advance(2);
      const tok = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
      assert.equal(tok.status, 200, tok.text);
      const server = await listen(tg.app);
      try {
        const claims = await verifyStepUpToken(tok.body.step_up_token, {
          issuer: tg.config.http.publicUrl,
          audience: pay.clientId,
          jwks: createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json` }),
          requiredAcr: 'urn:stepgate:aal2',
          expectedAction: ACTION,
          expectedContext: CONTEXT,
          expectedSubject: userId,
          replayStore: new MemoryReplayStore(),
          clock: { now: () => tg.clock.now() },
        });
        assert.deepEqual(claims.amr, ['sms']);
        assert.equal(claims.sub, userId);
      } finally {
        await server.close();
      }
      // The code is single-use, and it never reaches the audit log or the logs; the number is masked there.
      const again = await a.verify(s, code);
      assert.equal(again.status, 409);
      const audit = await tg.gw.store.db.selectFrom('audit_log').select(['type', 'data']).execute();
      const sent = audit.find((r) => r.type === 'sms.sent');
      assert.ok(sent);
      assert.equal(JSON.parse(sent.data).to, '+86 138****8000');
      for (const r of audit) {
        assert.ok(!r.data.includes(code), `${r.type} holds no code`);
        assert.ok(!r.data.includes('13800138000'), `${r.type} holds no full number`);
      }
      assert.ok(!tg.logs.text.includes(code));
      const stored = await tg.gw.store.db.selectFrom('factor_challenges').select('state').where('stepup_id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.ok(stored.state !== null && !stored.state.includes(code));
    });

    it('the text is in the user language (zh-CN)', async () => {
      const s = await a.create('alice');
      assert.equal((await a.challenge(s, { factor: 'sms_otp' }, 'zh-CN,zh;q=0.9')).status, 200);
      assert.match(sms.last().text, /^【Stepgate】验证码 \d{6}，用于确认向 shop-42 支付 120\.00 CNY，5分钟内有效。/);
      assert.equal(sms.last().locale, 'zh-CN');
    });

    it('a code is bound to its transaction: the code from A fails on B, B\'s own code works', async () => {
      const sA = await a.create('alice');
      const sB = await a.create('alice');
      assert.equal((await a.challenge(sA)).status, 200);
      const codeA = sms.lastCode();
      // B has no challenge yet: A's code is not even considered.
      const none = await a.verify(sB, codeA);
      assert.equal(none.status, 400);
      assert.equal(none.body.code, 'challenge_required');
      assert.equal((await a.challenge(sB)).status, 200);
      const codeB = sms.lastCode();
      if (codeA !== codeB) {
        const cross = await a.verify(sB, codeA);
        assert.equal(cross.status, 401);
        assert.equal(cross.body.code, 'factor_invalid');
      }
      // Even A's stored MAC copied onto B's challenge does not make A's code work there.
      const rowA = await tg.gw.store.db.selectFrom('factor_challenges').select('state').where('stepup_id', '=', sA.stepup_id).executeTakeFirstOrThrow();
      const stateA = JSON.parse(rowA.state ?? '{}') as Record<string, unknown>;
      const rowB = await tg.gw.store.db.selectFrom('factor_challenges').select('state').where('stepup_id', '=', sB.stepup_id).executeTakeFirstOrThrow();
      const stateB = JSON.parse(rowB.state ?? '{}') as Record<string, unknown>;
      await tg.gw.store.db.updateTable('factor_challenges').set({ state: JSON.stringify({ ...stateB, mac: stateA.mac }) }).where('stepup_id', '=', sB.stepup_id).execute();
      const copied = await a.verify(sB, codeA);
      assert.equal(copied.status, 401);
      await tg.gw.store.db.updateTable('factor_challenges').set({ state: JSON.stringify(stateB) }).where('stepup_id', '=', sB.stepup_id).execute();
      assert.equal((await a.verify(sB, codeB)).status, 200);
      assert.equal((await a.verify(sA, codeA)).status, 200);
    });

    it('valid for 5 minutes: accepted at 4:59, refused at 5:00 + 1 s', async () => {
      const early = await a.create('alice');
      const late = await a.create('alice');
      assert.equal((await a.challenge(early)).status, 200);
      const earlyCode = sms.lastCode();
      assert.equal((await a.challenge(late)).status, 200);
      const lateCode = sms.lastCode();
      const sentAt = tg.clock.now().getTime();
      const row = await tg.gw.store.db.selectFrom('factor_challenges').select('expires_at').where('stepup_id', '=', late.stepup_id).executeTakeFirstOrThrow();
      assert.equal(row.expires_at, sentAt + 300_000);
      tg.clock.advance(299);
      assert.equal((await a.verify(early, earlyCode)).status, 200);
      tg.clock.advance(2);
      const expired = await a.verify(late, lateCode);
      assert.ok(expired.status === 410 || expired.status === 400, expired.text);
      assert.ok(['stepup_expired', 'challenge_required'].includes(expired.body.code));
    });

    it('at most 5 attempts per challenge, and a resend never resets the count: the 6th is refused even with the right code', async () => {
      const s = await a.create(await ownUser());
      assert.equal((await a.challenge(s)).status, 200);
      const first = sms.lastCode();
      for (let i = 0; i < 3; i++) assert.equal((await a.verify(s, wrong(first))).body.code, 'factor_invalid');
      const tooSoon = await a.challenge(s);
      assert.equal(tooSoon.status, 429);
      assert.equal(tooSoon.body.code, 'challenge_cooldown');
      const retryAfter = Number(tooSoon.headers['retry-after']);
      assert.ok(retryAfter > 0 && retryAfter <= 60, String(retryAfter));
      tg.clock.advance(61);
      assert.equal((await a.challenge(s)).status, 200);
      const second = sms.lastCode();
      // The first code died with the resend (attempt 4).
      if (first !== second) assert.equal((await a.verify(s, first)).body.code, 'factor_invalid');
      else assert.equal((await a.verify(s, wrong(second))).body.code, 'factor_invalid');
      assert.equal((await a.verify(s, wrong(second))).body.code, 'factor_invalid'); // attempt 5
      const sixth = await a.verify(s, second);
      assert.equal(sixth.status, 429);
      assert.equal(sixth.body.code, 'challenge_attempts_exhausted');
      tg.clock.advance(61);
      const more = await a.challenge(s);
      assert.equal(more.status, 429);
      assert.equal(more.body.code, 'challenge_attempts_exhausted');
      const row = await tg.gw.store.db.selectFrom('factor_challenges').select(['attempts', 'consumed_at']).where('stepup_id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.equal(row.attempts, 5);
      assert.equal(row.consumed_at, null);
    });

    it('10 concurrent submissions of the right code: exactly one succeeds', async () => {
      const s = await a.create(await ownUser());
      assert.equal((await a.challenge(s)).status, 200);
      const code = sms.lastCode();
      const results = await Promise.all(Array.from({ length: 10 }, () => a.verify(s, code)));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => `${r.status} ${r.body.code ?? ''}`).join(', '));
    });

    it('several phones: the caller names one, the code goes there and only it verifies', async () => {
      const bob = (await makeUser(tg.gw, 'bob')).id;
      const p1 = await addPhone(tg.gw, bob, '+8613900139000', 'work');
      const p2 = await addPhone(tg.gw, bob, '+8613700137000', 'home');
      const s = await a.create('bob');
      const unnamed = await a.challenge(s);
      assert.equal(unnamed.status, 400);
      assert.equal(unnamed.body.invalid_params[0].pointer, '/factorId');
      const started = await a.challenge(s, { factor: 'sms_otp', factorId: p2 });
      assert.equal(started.status, 200, started.text);
      assert.equal(started.body.factor_id, p2);
      assert.equal(sms.last().to, '+8613700137000');
      assert.equal((await a.verify(s, sms.lastCode())).status, 200);
      const used = await tg.gw.store.db.selectFrom('factors').select(['id', 'last_used_at']).where('id', 'in', [p1, p2]).execute();
      assert.ok(used.find((f) => f.id === p2)?.last_used_at !== null);
      assert.equal(used.find((f) => f.id === p1)?.last_used_at, null);
    });

    it('a failed resend leaves nothing usable: not the new code, not the previous one', async () => {
      const s = await a.create(await ownUser());
      assert.equal((await a.challenge(s)).status, 200);
      const previous = sms.lastCode();
      tg.clock.advance(61);
      sms.set(async () => {
        throw new SmsSendError('http', { httpStatus: 500 });
      });
      try {
        const failed = await a.challenge(s);
        assert.equal(failed.status, 503, failed.text);
        assert.equal(failed.body.code, 'sms_unavailable');
        assert.equal(failed.headers['retry-after'], String(tg.config.sms.unavailableRetryAfterSeconds));
      } finally {
        sms.set(undefined);
      }
      const dead = await a.verify(s, previous);
      assert.equal(dead.status, 400);
      assert.equal(dead.body.code, 'challenge_required');
      const types = (await tg.gw.store.db.selectFrom('audit_log').select('type').execute()).map((r) => r.type);
      assert.ok(types.includes('sms.send_failed') && types.includes('stepup.challenge_failed'));
      // Retrying at once is allowed (the failed send gave its slot back), and works.
      assert.equal((await a.challenge(s)).status, 200);
      assert.equal((await a.verify(s, sms.lastCode())).status, 200);
    });
  });

  describe(`SMS send caps and allow-list in step-up (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let sms: SmsCapture;
    let a: ReturnType<typeof api>;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 1 }, sms: { allowedRegions: ['CN'], caps: { ...ROOMY_CAPS, perNumber: { hour: 2, day: 3 } } } } });
      await setPolicies(tg.gw, POLICY);
      const carol = (await makeUser(tg.gw, 'carol')).id;
      await addPhone(tg.gw, carol, PHONE);
      const dave = (await makeUser(tg.gw, 'dave')).id;
      await addPhone(tg.gw, dave, '+85291234567');
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
      sms = captureSms(tg.gw);
      a = api(tg, pay);
    });
    after(async () => {
      await tg.close();
    });

    it('the per-number budget: the 3rd code in the hour is refused with 429 + Retry-After and nothing is sent', async () => {
      for (let i = 0; i < 2; i++) assert.equal((await a.challenge(await a.create('carol'))).status, 200);
      const before = sms.sent.length;
      const s = await a.create('carol');
      const refused = await a.challenge(s);
      assert.equal(refused.status, 429, refused.text);
      assert.equal(refused.body.code, 'sms_limit_exceeded');
      assert.ok(Number(refused.headers['retry-after']) > 0 && Number(refused.headers['retry-after']) <= 3600);
      assert.equal(sms.sent.length, before);
      assert.equal((await a.verify(s, '123456')).body.code, 'challenge_required');
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'sms.send_refused').execute();
      assert.ok(audit.some((r) => JSON.parse(r.data).scope === 'number'));
    });

    it('a number outside the allowed regions gets nothing: 400 sms_region_not_allowed', async () => {
      const before = sms.sent.length;
      const refused = await a.challenge(await a.create('dave'));
      assert.equal(refused.status, 400);
      assert.equal(refused.body.code, 'sms_region_not_allowed');
      assert.equal(sms.sent.length, before);
    });
  });

  describe(`SMS through a real provider that fails (${dialect})`, () => {
    let tg: TestGateway;
    let provider: FakeHttpServer;
    let a: ReturnType<typeof api>;

    before(async () => {
      provider = await fakeHttpServer(() => ({ status: 200, body: '{}' }));
      tg = await createTestGateway({
        dialect,
        config: { stepup: { pollIntervalSeconds: 1 }, sms: { provider: 'webhook', webhook: { url: `${provider.url}/send`, secret: 'x'.repeat(40) }, sendTimeoutSeconds: 1, caps: ROOMY_CAPS } },
      });
      await setPolicies(tg.gw, POLICY);
      await addPhone(tg.gw, (await makeUser(tg.gw, 'erin')).id, PHONE);
      a = api(tg, await makeClient(tg.gw, 'pay', [ACTION]));
    });
    after(async () => {
      await tg.close();
      await provider.close();
    });

    const lastSentCode = () => codeInText((JSON.parse(provider.requests.at(-1)?.body ?? '{}') as { text: string }).text);

    for (const failure of ['500', 'timeout'] as const) {
      it(`provider ${failure} → 503 with Retry-After, audited; the code that may still arrive is useless`, async () => {
        const s = await a.create('erin');
        provider.handler = () => (failure === '500' ? { status: 500, body: '{"error":"down"}' } : 'hang');
        const res = await a.challenge(s);
        assert.equal(res.status, 503, res.text);
        assert.equal(res.body.code, 'sms_unavailable');
        assert.equal(res.headers['retry-after'], '30');
        const lost = lastSentCode();
        const row = await tg.gw.store.db.selectFrom('factor_challenges').select(['state', 'last_sent_at']).where('stepup_id', '=', s.stepup_id).executeTakeFirstOrThrow();
        assert.deepEqual({ ...row }, { state: null, last_sent_at: 0 });
        assert.equal((await a.verify(s, lost)).body.code, 'challenge_required');
        const failed = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'sms.send_failed').execute();
        assert.ok(failed.some((r) => JSON.parse(r.data).kind === (failure === '500' ? 'http' : 'timeout')));
        assert.ok(!tg.logs.text.includes('x'.repeat(40)), 'the webhook secret is never logged');
        // The provider is back: the retry sends a code that works.
        provider.handler = () => ({ status: 200, body: '{}' });
        assert.equal((await a.challenge(s)).status, 200);
        assert.equal((await a.verify(s, lastSentCode())).status, 200);
        assert.match(await tg.gw.metrics.registry.getSingleMetricAsString('stepgate_sms_total'), /provider="webhook",outcome="failed"} [1-9]/);
      });
    }
  });
}

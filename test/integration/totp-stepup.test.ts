import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import type { TotpParams } from '../../src/factors/totp/index.ts';
import { timeStep } from '../../src/otp/index.ts';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { listen, makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

const ACTION = 'payment_code.issue';
const STRICT_ACTION = 'transfer.large';
const CONTEXT = { amount: '120.00', currency: 'CNY', payee: 'shop-42' };
const STRONG: TotpParams = { algorithm: 'SHA256', digits: 8, period: 30 };

const policies = [
  { id: 'totp-any', action: ACTION, priority: 10, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' as const },
  {
    id: 'totp-strong',
    action: STRICT_ACTION,
    priority: 10,
    require: { anyOf: [['totp']] },
    acr: 'urn:stepgate:aal2' as const,
    totp: { algorithms: ['SHA256' as const, 'SHA512' as const], digits: [8 as const] },
  },
];

const unix = (tg: TestGateway) => Math.floor(tg.clock.now().getTime() / 1000);

async function createStepUp(tg: TestGateway, basic: string, subject: string, action = ACTION) {
  return tg.http().post('/v1/stepup').set('Authorization', basic).send({ subject, action, context: CONTEXT, binding_message: 'Pay 120.00 CNY to shop-42' });
}

function verify(tg: TestGateway, id: string, ticket: string, body: Record<string, unknown>) {
  return tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send(body);
}

for (const dialect of testDialects()) {
  describe(`TOTP as a step-up factor (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      // A few seconds into a time step, so "now" and "one step later" are unambiguous.
      tg = await createTestGateway({ dialect, clock: new FixedClock(Date.UTC(2026, 2, 1, 12, 0, 5)) });
      await setPolicies(tg.gw, policies);
      pay = await makeClient(tg.gw, 'payment-code service', [ACTION, STRICT_ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    async function stepUp(subject: string, action = ACTION) {
      const res = await createStepUp(tg, pay.basic, subject, action);
      assert.equal(res.status, 201, res.text);
      return res.body as { stepup_id: string; ticket: string; options: string[][]; acr: string; user_url: string };
    }

    it('far more concurrent submissions of the right code than attempts: exactly one success, never a step-up denied under it', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'flood');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      for (let round = 0; round < 3; round += 1) {
        const s = await stepUp('flood');
        tg.clock.advance(30);
        const code = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg));
        const answers = await Promise.all(Array.from({ length: 40 }, () => verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code })));
        const ok = answers.filter((a) => a.status === 200);
        assert.equal(ok.length, 1, answers.map((a) => a.body.code ?? a.status).join(','));
        for (const a of answers) assert.ok(a.status === 200 || (a.status >= 400 && a.status < 500), a.text);
        const row = await tg.gw.store.db.selectFrom('stepups').select(['status', 'attempts']).where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
        assert.equal(row.status, 'completed');
        assert.ok(Number(row.attempts) <= tg.gw.config.stepup.maxAttempts);
      }
    });

    it('the request that spends the last attempt on a wrong code ends the step-up at once; later ones are refused', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'guesser');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('guesser');
      const max = tg.gw.config.stepup.maxAttempts;
      const right = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg));
      const wrong = right === '000000' ? '111111' : '000000';
      for (let i = 1; i < max; i += 1) assert.equal((await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: wrong })).body.code, 'factor_invalid');
      const pending = await tg.gw.store.db.selectFrom('stepups').select('status').where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.equal(pending.status, 'pending', 'one attempt left');
      assert.equal((await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: wrong })).body.code, 'factor_invalid');
      const denied = await tg.gw.store.db.selectFrom('stepups').select('status').where('id', '=', s.stepup_id).executeTakeFirstOrThrow();
      assert.equal(denied.status, 'denied', 'the last wrong attempt ends it at once');
      assert.equal((await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: right })).body.code, 'stepup_not_pending', 'even the right code now');
      const token = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
      assert.equal(token.body.code, 'access_denied');
    });

    it('end to end: an oathtool code completes the step-up; the token is verified by src/verifier', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'alice');
      const { id: factorId, secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('alice');
      assert.deepEqual(s.options, [['totp']]);
      assert.equal(s.acr, 'urn:stepgate:aal2');
      const code = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg));
      const done = await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code });
      assert.equal(done.status, 200, done.text);
      assert.equal(done.body.completed, true);

      const row = await tg.gw.store.db.selectFrom('factors').select(['counter', 'last_used_at', 'failures']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.equal(row.counter, timeStep(tg.clock.now(), 30));
      assert.equal(row.last_used_at, tg.clock.now().getTime());
      assert.equal(row.failures, 0);

      tg.clock.advance(3);
      const got = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();
      assert.equal(got.status, 200, got.text);
      const server = await listen(tg.app);
      try {
        const jwks = createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json`, clock: tg.clock });
        const claims = await verifyStepUpToken(got.body.step_up_token, {
          issuer: tg.config.http.publicUrl,
          audience: pay.clientId,
          jwks,
          replayStore: new MemoryReplayStore(),
          clock: tg.clock,
          expectedAction: ACTION,
          expectedContext: CONTEXT,
          expectedSubject: user.id,
          requiredAcr: 'urn:stepgate:aal2',
        });
        assert.deepEqual(claims.amr, ['otp']);
        assert.equal(claims.acr, 'urn:stepgate:aal2');
        assert.equal(claims.txn, s.stepup_id);
      } finally {
        await server.close();
      }
      const secretB32 = (await import('../../src/otp/index.ts')).base32Encode(secret);
      assert.ok(!tg.logs.text.includes(secretB32) && !tg.logs.text.includes(secret.toString('hex')), 'the seed is never logged');
      assert.ok(!tg.logs.text.includes(`"${code}"`), 'the code is never logged');
    });

    it('replay: the same code on a second step-up fails (audited as replayed); the next step’s code works', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'bob');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const code = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg));
      const first = await stepUp('bob');
      await verify(tg, first.stepup_id, first.ticket, { factor: 'totp', code }).expect(200);
      const second = await stepUp('bob');
      const again = await verify(tg, second.stepup_id, second.ticket, { factor: 'totp', code });
      assert.equal(again.status, 401);
      assert.equal(again.body.code, 'factor_invalid');
      const failed = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.factor_failed').where('subject', '=', user.id).execute();
      assert.deepEqual(failed.map((r) => JSON.parse(r.data).reason), ['replayed']);
      // Still within the ±1 window a minute later: the code is old news all the same.
      tg.clock.advance(30);
      const later = await verify(tg, second.stepup_id, second.ticket, { factor: 'totp', code });
      assert.equal(later.body.code, 'factor_invalid');
      const next = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg));
      await verify(tg, second.stepup_id, second.ticket, { factor: 'totp', code: next }).expect(200);
    });

    it('server time only: a client-supplied time is refused as an unknown field, and a code for another time fails', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'erin');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('erin');
      const withTime = await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: '123456', time: 1_700_000_000 });
      assert.equal(withTime.status, 400);
      assert.ok(withTime.body.invalid_params.some((p: { pointer: string }) => p.pointer === '/time'), withTime.text);
      const stale = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg) - 300);
      assert.equal((await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: stale })).body.code, 'factor_invalid');
      const future = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg) + 300);
      assert.equal((await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: future })).body.code, 'factor_invalid');
      const bad = await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: 'x'.repeat(65) });
      assert.equal(bad.status, 400);
      assert.ok(bad.body.invalid_params.some((p: { pointer: string }) => p.pointer === '/code'), bad.text);
    });

    it('lockout: 10 wrong codes (counted before comparison, across step-ups) lock the factor; the right code is refused until the lock ends', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'dave');
      const { id: factorId, secret } = await insertActiveTotp(tg.gw, user.id);
      const right = oathtoolTotp(secret, DEFAULT_TOTP, unix(tg));
      const wrong = `${(Number(right[0]) + 5) % 10}${right.slice(1)}`;
      let wrongs = 0;
      while (wrongs < 10) {
        const s = await stepUp('dave');
        for (let i = 0; i < 4 && wrongs < 10; i += 1, wrongs += 1) {
          assert.equal((await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: wrong })).body.code, 'factor_invalid');
        }
      }
      const s = await stepUp('dave');
      const locked = await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: right });
      assert.equal(locked.status, 423);
      assert.equal(locked.body.code, 'factor_locked');
      const row = await tg.gw.store.db.selectFrom('factors').select(['failures', 'locked_until', 'counter']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.equal(row.failures, 10);
      assert.equal(row.locked_until, tg.clock.now().getTime() + 900_000);
      assert.equal(row.counter, 0, 'nothing was accepted');
      tg.clock.advance(901);
      const after = await stepUp('dave');
      await verify(tg, after.stepup_id, after.ticket, { factor: 'totp', code: oathtoolTotp(secret, DEFAULT_TOTP, unix(tg)) }).expect(200);
      const reset = await tg.gw.store.db.selectFrom('factors').select(['failures', 'locked_until']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.deepEqual({ ...reset }, { failures: 0, locked_until: null });
    });

    it('a policy’s totp constraint: an app that does not qualify is not offered, and cannot be used', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const weak = await makeUser(tg.gw, 'frank');
      const { secret: weakSecret } = await insertActiveTotp(tg.gw, weak.id, DEFAULT_TOTP);
      const refused = await createStepUp(tg, pay.basic, 'frank', STRICT_ACTION);
      assert.equal(refused.status, 409);
      assert.equal(refused.body.code, 'enrollment_required');
      // The same app is fine for the lenient policy.
      const lenient = await stepUp('frank');
      await verify(tg, lenient.stepup_id, lenient.ticket, { factor: 'totp', code: oathtoolTotp(weakSecret, DEFAULT_TOTP, unix(tg)) }).expect(200);

      const strong = await makeUser(tg.gw, 'grace');
      const { secret } = await insertActiveTotp(tg.gw, strong.id, STRONG);
      const s = await stepUp('grace', STRICT_ACTION);
      assert.deepEqual(s.options, [['totp']]);
      // Swapped for a SHA1 app after the step-up was created: verification goes by the policy too.
      await tg.gw.store.db.updateTable('factors').set({ params: JSON.stringify(DEFAULT_TOTP) }).where('user_id', '=', strong.id).execute();
      const swapped = await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: oathtoolTotp(secret, DEFAULT_TOTP, unix(tg)) });
      assert.equal(swapped.status, 400);
      assert.equal(swapped.body.code, 'factor_not_allowed');
      await tg.gw.store.db.updateTable('factors').set({ params: JSON.stringify(STRONG) }).where('user_id', '=', strong.id).execute();
      const ok = await verify(tg, s.stepup_id, s.ticket, { factor: 'totp', code: oathtoolTotp(secret, STRONG, unix(tg)) });
      assert.equal(ok.status, 200, ok.text);
    });

    it('the step-up page offers the authenticator app and completes with its code', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const user = await makeUser(tg.gw, 'heidi');
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('heidi');
      const browser = tg.agent();
      const url = new URL(s.user_url);
      await browser.get(url.pathname + url.search).expect(303);
      const page = await browser.get(url.pathname);
      assert.equal(page.status, 200);
      assert.match(page.text, /name="factor" value="totp"/);
      assert.match(page.text, /autocomplete="one-time-code"/);
      const csrf = /name="_stepup_csrf" value="([^"]+)"/.exec(page.text)?.[1] ?? '';
      const done = await browser.post(`/stepup/${s.stepup_id}/verify`).type('form').send({ _stepup_csrf: csrf, factor: 'totp', code: oathtoolTotp(secret, DEFAULT_TOTP, unix(tg)) });
      assert.equal(done.status, 303, done.text);
      const status = await tg.http().get(`/v1/stepup/${s.stepup_id}`).set('Authorization', `Ticket ${s.ticket}`);
      assert.equal(status.body.status, 'completed');
    });
  });

  describe(`TOTP replay under concurrency, two gateway processes (${dialect})`, () => {
    let a: TestGateway;
    let b: TestGateway;

    before(async () => {
      // A high failure limit, so all 20 submissions reach the comparison and only the
      // compare-and-set on the last accepted step decides.
      const config = { factors: { maxFailures: 100 } };
      a = await createTestGateway({ dialect, config, clock: new FixedClock(Date.UTC(2026, 2, 1, 12, 0, 5)) });
      b = await createTestGateway({ dialect, config, database: a.database, clock: a.clock });
      await setPolicies(a.gw, policies);
    });
    after(async () => {
      await b.close();
      await a.close();
    });

    it('20 concurrent submissions of one code on 20 step-ups: exactly one succeeds', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const pay = await makeClient(a.gw, 'pay', [ACTION]);
      const user = await makeUser(a.gw, 'ivan');
      const { id: factorId, secret } = await insertActiveTotp(a.gw, user.id);
      const stepUps = [];
      for (let i = 0; i < 20; i += 1) {
        const res = await createStepUp(a, pay.basic, 'ivan');
        assert.equal(res.status, 201, res.text);
        stepUps.push(res.body as { stepup_id: string; ticket: string });
      }
      const code = oathtoolTotp(secret, DEFAULT_TOTP, unix(a));
      const results = await Promise.all(stepUps.map((s, i) => verify(i % 2 === 0 ? a : b, s.stepup_id, s.ticket, { factor: 'totp', code })));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
      for (const r of results.filter((x) => x.status !== 200)) assert.equal(r.body.code, 'factor_invalid');
      const completed = await a.gw.store.db.selectFrom('stepups').select('id').where('user_id', '=', user.id).where('status', '=', 'completed').execute();
      assert.equal(completed.length, 1);
      const row = await a.gw.store.db.selectFrom('factors').select('counter').where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.equal(row.counter, timeStep(a.clock.now(), 30));
    });

    it('20 concurrent submissions of one code on ONE step-up (attempt limit raised): one success', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const pay = await makeClient(a.gw, 'pay2', [ACTION]);
      const user = await makeUser(a.gw, 'judy');
      const { secret } = await insertActiveTotp(a.gw, user.id);
      const res = await createStepUp(a, pay.basic, 'judy');
      const s = res.body as { stepup_id: string; ticket: string };
      await a.gw.store.db.updateTable('stepups').set({ max_attempts: 20 }).where('id', '=', s.stepup_id).execute();
      const code = oathtoolTotp(secret, DEFAULT_TOTP, unix(a));
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => verify(i % 2 === 0 ? a : b, s.stepup_id, s.ticket, { factor: 'totp', code })));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((x) => x === 200).length, 1, statuses.join(','));
      // The losers: the code was replayed (401), or the step-up had already completed (409).
      for (const r of results.filter((x) => x.status !== 200)) assert.ok(['factor_invalid', 'stepup_not_pending'].includes(r.body.code), r.text);
    });
  });
}

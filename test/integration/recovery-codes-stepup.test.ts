import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import { generateRecoveryCodeSet } from '../../src/flows/recovery-codes.ts';
import { DEMO_POLICIES } from '../../src/policy/demo-policies.ts';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { listen, makeClient, makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

const RECOVER = 'account.recover';
const PAY = 'payment_code.issue';
const CONTEXT = { amount: '50.00', currency: 'CNY', payee: 'shop-1' };
const policies = [...DEMO_POLICIES, { id: 'recover', action: RECOVER, priority: 10, require: { anyOf: [['recovery_code']] }, acr: 'urn:stepgate:aal1' as const }];
const who = { actor: 'test' };

function verify(tg: TestGateway, s: { stepup_id: string; ticket: string }, code: string) {
  return tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'recovery_code', code });
}

for (const dialect of testDialects()) {
  describe(`recovery codes as a step-up factor (${dialect})`, () => {
    let tg: TestGateway;
    let b: TestGateway;
    let client: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      const config = { factors: { maxFailures: 100 } };
      tg = await createTestGateway({ dialect, config, clock: new FixedClock(Date.UTC(2026, 3, 1, 8, 0, 0)) });
      // A second gateway process on the same database.
      b = await createTestGateway({ dialect, config, database: tg.database, clock: tg.clock });
      await setPolicies(tg.gw, policies);
      client = await makeClient(tg.gw, 'wallet', [RECOVER, PAY]);
    });
    after(async () => {
      await b.close();
      await tg.close();
    });

    async function stepUp(subject: string, action = RECOVER) {
      const res = await tg.http().post('/v1/stepup').set('Authorization', client.basic).send({ subject, action, context: action === PAY ? CONTEXT : {} });
      assert.equal(res.status, 201, res.text);
      return res.body as { stepup_id: string; ticket: string; options: string[][]; user_url: string };
    }

    it('end to end: a recovery code completes the step-up, the token (amr otp, aal1) verifies; the code is then used up', async () => {
      const user = await makeUser(tg.gw, 'alice');
      const set = await generateRecoveryCodeSet(tg.gw, user.id, who);
      assert.equal(set.codes.length, 10);
      const s = await stepUp('alice');
      assert.deepEqual(s.options, [['recovery_code']]);
      await verify(tg, s, set.codes[0]!.toUpperCase()).expect(200);
      tg.clock.advance(3);
      const got = await tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', client.basic).send();
      assert.equal(got.status, 200, got.text);
      const server = await listen(tg.app);
      try {
        const claims = await verifyStepUpToken(got.body.step_up_token, {
          issuer: tg.config.http.publicUrl,
          audience: client.clientId,
          jwks: createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json`, clock: tg.clock }),
          replayStore: new MemoryReplayStore(),
          clock: tg.clock,
          expectedAction: RECOVER,
          expectedContext: {},
          expectedSubject: user.id,
          requiredAcr: 'urn:stepgate:aal1',
        });
        assert.deepEqual(claims.amr, ['otp']);
        assert.equal(claims.acr, 'urn:stepgate:aal1');
      } finally {
        await server.close();
      }
      const again = await stepUp('alice');
      const reused = await verify(tg, again, set.codes[0]!);
      assert.equal(reused.status, 401);
      assert.equal(reused.body.code, 'factor_invalid');
      await verify(tg, again, set.codes[1]!).expect(200);
      const row = await tg.gw.store.db.selectFrom('factors').select(['params', 'secret_hash', 'counter']).where('id', '=', set.factorId).executeTakeFirstOrThrow();
      assert.deepEqual(JSON.parse(row.params), { total: 10, remaining: 8 });
      assert.equal(row.counter, 2);
      for (const c of set.codes) assert.ok(!row.secret_hash!.includes(c.replaceAll('-', '')), 'only hashes are stored');
      for (const c of set.codes) assert.ok(!tg.logs.text.includes(c) && !tg.logs.text.includes(c.replaceAll('-', '')), 'codes are never logged');
    });

    it('20 concurrent uses of one code on 20 step-ups across two processes: exactly one succeeds', async () => {
      const user = await makeUser(tg.gw, 'bob');
      const set = await generateRecoveryCodeSet(tg.gw, user.id, who);
      const stepUps = [];
      for (let i = 0; i < 20; i += 1) stepUps.push(await stepUp('bob'));
      const results = await Promise.all(stepUps.map((s, i) => verify(i % 2 === 0 ? tg : b, s, set.codes[5]!)));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((x) => x === 200).length, 1, statuses.join(','));
      for (const r of results.filter((x) => x.status !== 200)) assert.equal(r.body.code, 'factor_invalid');
      const row = await tg.gw.store.db.selectFrom('factors').select('params').where('id', '=', set.factorId).executeTakeFirstOrThrow();
      assert.equal(JSON.parse(row.params).remaining, 9);
    });

    it('different codes used concurrently: no used code comes back, no unused code is lost', async () => {
      const user = await makeUser(tg.gw, 'carol');
      const set = await generateRecoveryCodeSet(tg.gw, user.id, who);
      const stepUps = [];
      for (let i = 0; i < 6; i += 1) stepUps.push(await stepUp('carol'));
      const results = await Promise.all(stepUps.map((s, i) => verify(i % 2 === 0 ? tg : b, s, set.codes[i]!)));
      const won = results.map((r) => r.status === 200);
      assert.ok(won.some(Boolean), 'at least one wins');
      const row = await tg.gw.store.db.selectFrom('factors').select('params').where('id', '=', set.factorId).executeTakeFirstOrThrow();
      assert.equal(JSON.parse(row.params).remaining, 10 - won.filter(Boolean).length);
      // A code whose use lost the race is still good; a code that won is gone.
      for (const [i, w] of won.entries()) {
        const s = await stepUp('carol');
        assert.equal((await verify(tg, s, set.codes[i]!)).status, w ? 401 : 200, `code ${i} won=${w}`);
      }
    });

    it('regenerating invalidates the whole old set at once; the new codes work', async () => {
      const user = await makeUser(tg.gw, 'dave');
      const old = await generateRecoveryCodeSet(tg.gw, user.id, who);
      assert.equal(old.replaced, false);
      const fresh = await generateRecoveryCodeSet(tg.gw, user.id, who);
      assert.equal(fresh.replaced, true);
      const s = await stepUp('dave');
      for (const c of old.codes.slice(0, 3)) assert.equal((await verify(tg, s, c)).body.code, 'factor_invalid');
      await verify(tg, s, fresh.codes[0]!).expect(200);
      const rows = await tg.gw.store.db.selectFrom('factors').select(['id', 'params']).where('user_id', '=', user.id).where('type', '=', 'recovery_code').execute();
      assert.equal(rows.length, 1);
      assert.deepEqual(JSON.parse(rows[0]!.params), { total: 10, remaining: 9 });
      const audit = await tg.gw.store.db.selectFrom('audit_log').select(['type', 'data']).where('subject', '=', user.id).where('type', 'like', 'factor.%').orderBy('seq').execute();
      assert.deepEqual(audit.map((r) => r.type), ['factor.enrolled', 'factor.regenerated']);
    });

    it('a verification in flight against the old set loses to a regeneration', async () => {
      const user = await makeUser(tg.gw, 'erin');
      const old = await generateRecoveryCodeSet(tg.gw, user.id, who);
      // Many tries, so the interleavings where the regeneration lands mid-verification occur.
      for (let round = 0; round < 5; round += 1) {
        const s = await stepUp('erin');
        const code = old.codes[round]!;
        const [used, regenerated] = await Promise.all([verify(b, s, code), generateRecoveryCodeSet(tg.gw, user.id, who)]);
        const row = await tg.gw.store.db.selectFrom('factors').select(['params', 'secret_hash']).where('user_id', '=', user.id).where('type', '=', 'recovery_code').executeTakeFirstOrThrow();
        // Whatever the order, the set in force is the new one, complete.
        assert.equal(JSON.parse(row.params).remaining, 10, `round ${round}: ${used.status}`);
        const current = await stepUp('erin');
        await verify(tg, current, regenerated.codes[0]!).expect(200);
        if (used.status === 200) {
          // It may only have won if it finished before the regeneration.
          const order = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', user.id).where('type', 'in', ['stepup.factor_verified', 'factor.regenerated']).orderBy('seq', 'desc').limit(3).execute();
          assert.deepEqual(order.map((r) => r.type), ['stepup.factor_verified', 'factor.regenerated', 'stepup.factor_verified'], `round ${round}`);
        }
        old.codes.splice(0, old.codes.length, ...regenerated.codes);
      }
    });

    it('only where a policy allows it: the demo payment policies never accept recovery codes', async (t) => {
      for (const p of DEMO_POLICIES) assert.ok(!p.require.anyOf.flat().includes('recovery_code'), p.id);
      const user = await makeUser(tg.gw, 'frank');
      const set = await generateRecoveryCodeSet(tg.gw, user.id, who);
      const refused = await tg.http().post('/v1/stepup').set('Authorization', client.basic).send({ subject: 'frank', action: PAY, context: CONTEXT });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.code, 'enrollment_required');
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const { secret } = await insertActiveTotp(tg.gw, user.id);
      const s = await stepUp('frank', PAY);
      assert.ok(!s.options.flat().includes('recovery_code'));
      const notAllowed = await verify(tg, s, set.codes[0]!);
      assert.equal(notAllowed.status, 400);
      assert.equal(notAllowed.body.code, 'factor_not_allowed');
      await tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'totp', code: oathtoolTotp(secret, DEFAULT_TOTP, Math.floor(tg.clock.now().getTime() / 1000)) }).expect(200);
    });

    it('the step-up page offers a recovery-code field (text, not numeric) and accepts a code', async () => {
      const user = await makeUser(tg.gw, 'grace');
      const set = await generateRecoveryCodeSet(tg.gw, user.id, who);
      const s = await stepUp('grace');
      const browser = tg.agent();
      const url = new URL(s.user_url);
      await browser.get(url.pathname + url.search).expect(303);
      const page = await browser.get(url.pathname);
      assert.match(page.text, /name="factor" value="recovery_code"/);
      assert.match(page.text, /id="f-recovery_code" name="code" inputmode="text"/);
      const csrf = /name="_stepup_csrf" value="([^"]+)"/.exec(page.text)?.[1] ?? '';
      const done = await browser.post(`/stepup/${s.stepup_id}/verify`).type('form').send({ _stepup_csrf: csrf, factor: 'recovery_code', code: ` ${set.codes[2]} ` });
      assert.equal(done.status, 303, done.text);
      const status = await tg.http().get(`/v1/stepup/${s.stepup_id}`).set('Authorization', `Ticket ${s.ticket}`);
      assert.equal(status.body.status, 'completed');
    });
  });
}

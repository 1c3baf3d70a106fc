import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { expireStaleStepUps, purgeExpiredRecords } from '../../src/flows/maintenance.ts';
import { ASSERTION_JTI_PRUNE_GRACE_SECONDS } from '../../src/flows/clients.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

const ACTION = 'account.change_limit';
const CONTEXT = { limit: '5000.00' };

for (const dialect of testDialects()) {
  describe(`step-up lifecycle: expiry, cancel, max age, metrics (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let other: Awaited<ReturnType<typeof makeClient>>;
    let totp: { id: string; secret: Buffer };

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 1 } } });
      await setPolicies(tg.gw, [
        { id: 'remembered', action: ACTION, priority: 10, require: { anyOf: [['password'], ['totp']] }, acr: 'urn:stepgate:aal1', maxAgeSeconds: 600 },
        { id: 'fresh', action: 'payment_code.issue', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', maxAgeSeconds: 0 },
        { id: 'sha256-app', action: 'account.close', priority: 10, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2', maxAgeSeconds: 600, totp: { algorithms: ['SHA256'] } },
      ]);
      const hugo = await makeUser(tg.gw, 'hugo');
      // Two authenticator apps: disabling one leaves totp among the user's factors.
      totp = await insertActiveTotp(tg.gw, hugo.id);
      await insertActiveTotp(tg.gw, hugo.id, { ...DEFAULT_TOTP, algorithm: 'SHA256' });
      pay = await makeClient(tg.gw, 'pay', [ACTION, 'payment_code.issue', 'account.close']);
      other = await makeClient(tg.gw, 'other', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    async function create(action = ACTION, client = pay) {
      const res = await tg.http().post('/v1/stepup').set('Authorization', client.basic).send({ subject: 'hugo', action, context: CONTEXT });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { stepup_id: string; ticket: string };
    }
    const status = async (id: string) => (await tg.gw.store.db.selectFrom('stepups').select(['status', 'auth_time']).where('id', '=', id).executeTakeFirstOrThrow());
    const token = (id: string, client = pay) => tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', client.basic).send();

    it('a step-up nobody polls is marked expired by the sweeper, audited once even when two sweep at once', async () => {
      const s = await create();
      tg.clock.advance(301);
      const [a, b] = await Promise.all([expireStaleStepUps(tg.gw), expireStaleStepUps(tg.gw)]);
      assert.ok(a + b >= 1);
      assert.equal((await status(s.stepup_id)).status, 'expired');
      const events = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.expired').execute();
      assert.equal(events.filter((e) => e.data.includes(s.stepup_id)).length, 1);
      assert.equal((await token(s.stepup_id)).body.code, 'expired_token');
    });

    it('cancelling an expired step-up says it expired and does not turn it into "cancelled"', async () => {
      const s = await create();
      tg.clock.advance(301);
      const res = await tg.http().delete(`/v1/stepup/${s.stepup_id}`).set('Authorization', pay.basic);
      assert.equal(res.status, 410);
      assert.equal(res.body.code, 'stepup_expired');
      assert.equal((await status(s.stepup_id)).status, 'expired');
    });

    it('maxAgeSeconds > 0 reuses a recent authentication for the same client, keeping its auth_time; 0 never does', async () => {
      const first = await create();
      const v = await tg.http().post(`/v1/stepup/${first.stepup_id}/verify`).set('Authorization', `Ticket ${first.ticket}`).send({ factor: 'password', password: PASSWORD });
      assert.equal(v.body.completed, true);
      const authTime = (await status(first.stepup_id)).auth_time;
      tg.clock.advance(120);
      const second = await create();
      assert.equal((await status(second.stepup_id)).status, 'completed');
      tg.clock.advance(1);
      const tok = await token(second.stepup_id);
      assert.equal(tok.status, 200);
      const claims = JSON.parse(Buffer.from(tok.body.step_up_token.split('.')[1], 'base64url').toString());
      assert.equal(claims.auth_time, Math.floor(Number(authTime) / 1000));
      assert.deepEqual(claims.authorization_details, [{ ...CONTEXT, type: ACTION }]);
      const reuse = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.completed').execute();
      assert.ok(reuse.some((r) => r.data.includes('"max_age"') && r.data.includes(second.stepup_id)));
      // Another client does not inherit this client's authentication.
      const foreign = await create(ACTION, other);
      assert.equal((await status(foreign.stepup_id)).status, 'pending');
      // A policy with maxAgeSeconds 0 always asks again.
      const fresh = await create('payment_code.issue');
      assert.equal((await status(fresh.stepup_id)).status, 'pending');
      // Past the max age: asked again.
      tg.clock.advance(600);
      const later = await create();
      assert.equal((await status(later.stepup_id)).status, 'pending');
    });

    it('max age: a proof whose factor was disabled since (a stolen phone), or that this policy\'s factor constraints exclude, approves nothing more', async () => {
      tg.clock.advance(601); // nothing earlier is reusable
      const first = await create();
      const code = oathtoolTotp(totp.secret, DEFAULT_TOTP, Math.floor(tg.clock.now().getTime() / 1000));
      const v = await tg.http().post(`/v1/stepup/${first.stepup_id}/verify`).set('Authorization', `Ticket ${first.ticket}`).send({ factor: 'totp', code, factorId: totp.id });
      assert.equal(v.body.completed, true, v.text);
      // A policy that admits only SHA-256 apps does not take this SHA-1 app's proof.
      assert.equal((await status((await create('account.close')).stepup_id)).status, 'pending');
      // The user still has another authenticator, so the policy still offers totp.
      await tg.gw.store.db.updateTable('factors').set({ status: 'disabled' }).where('id', '=', totp.id).execute();
      assert.equal((await status((await create()).stepup_id)).status, 'pending');
      await tg.gw.store.db.updateTable('factors').set({ status: 'active' }).where('id', '=', totp.id).execute();
      assert.equal((await status((await create()).stepup_id)).status, 'completed');
    });

    it('purges dead single-use records', async () => {
      const nowMs = tg.clock.now().getTime();
      await tg.gw.store.db.insertInto('client_assertion_jtis').values({ client_id: pay.clientId, jti: 'old-jti', expires_at: nowMs - ASSERTION_JTI_PRUNE_GRACE_SECONDS * 1000 - 1 }).execute();
      // Just expired by this process's clock: kept, since another process's clock may run behind.
      await tg.gw.store.db.insertInto('client_assertion_jtis').values({ client_id: pay.clientId, jti: 'recent-jti', expires_at: nowMs - 1 }).execute();
      await purgeExpiredRecords(tg.gw);
      const left = await tg.gw.store.db.selectFrom('client_assertion_jtis').select('jti').where('jti', 'in', ['old-jti', 'recent-jti']).execute();
      assert.deepEqual(left.map((r) => r.jti), ['recent-jti']);
    });

    it('/metrics counts step-up events and token issue latency', async () => {
      const res = await tg.http().get('/metrics');
      assert.equal(res.status, 200);
      for (const event of ['created', 'completed', 'expired', 'token_issued']) {
        assert.match(res.text, new RegExp(`stepgate_stepup_events_total\\{event="${event}"\\} [1-9]`), event);
      }
      assert.match(res.text, /stepgate_token_issue_duration_seconds_count [1-9]/);
    });
  });
}

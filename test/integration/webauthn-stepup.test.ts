import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createApp } from '../../src/app.ts';
import { createGateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/logger.ts';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import request from 'supertest';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { signIn, type SignedIn } from '../helpers/session.ts';
import { SoftCredential } from '../helpers/soft-authenticator.ts';
import { listen, makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { answer, enrolSoft, ORIGIN, RP_ID, type StepUpHandle, ticketed, WEBAUTHN_TEST_CONFIG } from '../helpers/webauthn.ts';

/**
 * WebAuthn in step-up, end to end through the HTTP API, with assertions built and signed by
 * a software authenticator so that every bad variant can be produced: wrong origin, wrong
 * RP ID, UP=0, UV=0, BS without BE, replays, counter regression, another user's credential.
 */

const PAY = 'payment_code.issue';
const SEED = 'payment_code.offline_seed';
const CONTEXT = { amount: '300.00', currency: 'CNY', payee: 'shop-7' };

const policies = [
  { id: 'pay', action: PAY, priority: 10, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal2' as const, tokenTtlSeconds: 120 },
  { id: 'seed', action: SEED, priority: 10, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal3' as const, tokenTtlSeconds: 120 },
];

for (const dialect of testDialects()) {
  describe(`webauthn step-up (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let alice: SignedIn;
    let bob: SignedIn;
    // alice: a device-bound key with a counter, and a synced passkey; bob: a synced passkey only.
    const aliceKey = new SoftCredential({ counter: 5 });
    const aliceSynced = new SoftCredential({ backupEligible: true });
    const bobSynced = new SoftCredential({ backupEligible: true });
    let aliceKeyId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { ...WEBAUTHN_TEST_CONFIG, stepup: { pollIntervalSeconds: 1, maxAttempts: 20 } } });
      await setPolicies(tg.gw, policies);
      await makeUser(tg.gw, 'alice');
      await makeUser(tg.gw, 'bob');
      pay = await makeClient(tg.gw, 'pay', [PAY, SEED]);
      alice = await signIn(tg, 'alice', PASSWORD);
      bob = await signIn(tg, 'bob', PASSWORD);
      aliceKeyId = await enrolSoft(tg, alice, aliceKey, 'Laptop fingerprint');
      await enrolSoft(tg, alice, aliceSynced, 'Phone passkey');
      await enrolSoft(tg, bob, bobSynced, 'Bob phone');
    });
    after(async () => {
      await tg.close();
    });

    async function create(subject = 'alice', action = PAY): Promise<StepUpHandle> {
      const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject, action, context: CONTEXT, binding_message: 'Pay 300.00 CNY to shop-7' });
      assert.equal(res.status, 201, res.text);
      return res.body as StepUpHandle;
    }
    async function token(id: string) {
      tg.clock.advance(1);
      return tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
    }
    async function claimsOf(tokenValue: string, requiredAcr: 'urn:stepgate:aal2' | 'urn:stepgate:aal3', action = PAY, subject = alice.userId) {
      const server = await listen(tg.app);
      try {
        return await verifyStepUpToken(tokenValue, {
          issuer: ORIGIN, audience: pay.clientId, jwks: createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json` }),
          requiredAcr, expectedAction: action, expectedContext: CONTEXT, expectedSubject: subject, replayStore: new MemoryReplayStore(), clock: { now: () => tg.clock.now() },
        });
      } finally {
        await server.close();
      }
    }
    async function failures(stepupId: string) {
      const rows = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.factor_failed').execute();
      return rows.map((r) => JSON.parse(r.data) as { stepupId: string; reason: string; detail?: string }).filter((d) => d.stepupId === stepupId);
    }
    const status = async (id: string) => (await tg.gw.store.db.selectFrom('stepups').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;

    it('the challenge: ≥16 random bytes, UV required, the user\'s credentials only, bounded by the step-up', async () => {
      const s = await create();
      const started = await ticketed(tg, s).challenge();
      assert.equal(started.status, 200, started.text);
      const o = started.body.options;
      assert.ok(Buffer.from(o.challenge, 'base64url').length >= 16);
      assert.equal(o.userVerification, 'required');
      assert.equal(o.rpId, RP_ID);
      assert.deepEqual(o.allowCredentials.map((c: { id: string }) => c.id).sort(), [aliceKey.credentialId, aliceSynced.credentialId].sort());
      assert.equal(started.body.factor_id, null);
      assert.ok(started.body.expires_in <= 150 && started.body.expires_in > 0);
      // Another challenge is a new random value.
      tg.clock.advance(2);
      const again = await ticketed(tg, s).challenge();
      assert.notEqual(again.body.options.challenge, o.challenge);
    });

    it('a device-bound credential with UV: the token says aal3 and amr ["hwk","user"], also on an aal2 policy', async () => {
      const s = await create();
      const { res } = await answer(tg, s, aliceKey);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.completed, true);
      const got = await token(s.stepup_id);
      assert.equal(got.status, 200, got.text);
      const claims = await claimsOf(got.body.step_up_token, 'urn:stepgate:aal3');
      assert.equal(claims.acr, 'urn:stepgate:aal3');
      assert.deepEqual(claims.amr, ['hwk', 'user']);
      // The counter moved forward and last use was recorded.
      const row = await tg.gw.store.db.selectFrom('factors').select(['counter', 'last_used_at']).where('id', '=', aliceKeyId).executeTakeFirstOrThrow();
      assert.equal(row.counter, aliceKey.counter);
      assert.equal(row.last_used_at, tg.clock.now().getTime() - 1000);
      const completed = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.completed').execute();
      assert.ok(completed.some((c) => JSON.parse(c.data).stepupId === s.stepup_id && JSON.parse(c.data).acr === 'urn:stepgate:aal3'));
    });

    it('a synced passkey: aal2 with amr ["swk","user"]; its backup state is kept up to date', async () => {
      const s = await create();
      const { res } = await answer(tg, s, aliceSynced, { flags: { bs: true } });
      assert.equal(res.status, 200, res.text);
      const got = await token(s.stepup_id);
      const claims = await claimsOf(got.body.step_up_token, 'urn:stepgate:aal2');
      assert.equal(claims.acr, 'urn:stepgate:aal2');
      assert.deepEqual(claims.amr, ['swk', 'user']);
      await assert.rejects(claimsOf(got.body.step_up_token, 'urn:stepgate:aal3'));
      const rows = await tg.gw.store.db.selectFrom('factors').select('params').where('type', '=', 'webauthn').execute();
      const synced = rows.map((r) => JSON.parse(r.params)).find((p) => p.credentialId === aliceSynced.credentialId);
      assert.equal(synced.backedUp, true);
    });

    it('an aal3 policy offers only device-bound credentials, and a user with only a synced passkey must enrol', async () => {
      const s = await create('alice', SEED);
      const started = await ticketed(tg, s).challenge();
      assert.deepEqual(started.body.options.allowCredentials.map((c: { id: string }) => c.id), [aliceKey.credentialId]);
      assert.equal(started.body.factor_id, aliceKeyId);
      const synced = aliceSynced.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
      const refused = await ticketed(tg, s).verify(synced);
      assert.equal(refused.status, 400);
      assert.equal(refused.body.code, 'factor_not_allowed');
      const ok = await ticketed(tg, s).verify(aliceKey.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID }));
      assert.equal(ok.status, 200, ok.text);
      const claims = await claimsOf((await token(s.stepup_id)).body.step_up_token, 'urn:stepgate:aal3', SEED);
      assert.equal(claims.acr, 'urn:stepgate:aal3');
      const bobs = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'bob', action: SEED, context: CONTEXT });
      assert.equal(bobs.status, 409);
      assert.equal(bobs.body.code, 'enrollment_required');
    });

    const refusals: [string, Parameters<typeof answer>[3], string][] = [
      ['wrong origin', { origin: 'https://pay.example.com.evil.test' }, 'origin_mismatch'],
      ['origin with another port', { origin: 'https://pay.example.com:8443' }, 'origin_mismatch'],
      ['wrong RP ID', { rpId: 'example.com' }, 'rp_id_mismatch'],
      ['UP=0', { flags: { up: false } }, 'user_not_present'],
      ['UV=0', { flags: { uv: false } }, 'user_not_verified'],
      ['BS=1 with BE=0', { flags: { bs: true } }, 'backup_state_invalid'],
      ['BE=1 on a credential registered device-bound', { flags: { be: true } }, 'backup_eligibility_changed'],
      ['a bad signature', { badSignature: true }, 'signature_invalid'],
      ['another user\'s handle', { userHandle: Buffer.from('usr_someone_else').toString('base64url') }, 'user_handle_mismatch'],
    ];
    for (const [name, o, detail] of refusals) {
      it(`refused: ${name} (401 factor_invalid, audited as ${detail}, the step-up stays pending)`, async () => {
        const s = await create();
        const { res } = await answer(tg, s, aliceKey, o);
        assert.equal(res.status, 401, res.text);
        assert.equal(res.body.code, 'factor_invalid');
        assert.ok(!JSON.stringify(res.body).includes(detail), 'the answer does not say why');
        assert.deepEqual((await failures(s.stepup_id)).map((f) => f.detail), [detail]);
        assert.equal(await status(s.stepup_id), 'pending');
      });
    }

    it('refused: a replayed assertion — after success the challenge is gone; on another step-up it is the wrong challenge', async () => {
      const s = await create();
      const { res, assertion } = await answer(tg, s, aliceKey);
      assert.equal(res.status, 200);
      const replay = await ticketed(tg, s).verify(assertion);
      assert.equal(replay.status, 409);
      assert.equal(replay.body.code, 'stepup_not_pending');
      const other = await create();
      const t = ticketed(tg, other);
      assert.equal((await t.challenge()).status, 200);
      const again = await t.verify(assertion);
      assert.equal(again.status, 401);
      assert.deepEqual((await failures(other.stepup_id)).map((f) => f.detail), ['challenge_mismatch']);
    });

    it('refused: the same valid assertion sent 10 times at once completes the step-up exactly once', async () => {
      const s = await create();
      const t = ticketed(tg, s);
      const started = await t.challenge();
      const assertion = aliceKey.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
      const results = await Promise.all(Array.from({ length: 10 }, () => t.verify(assertion)));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.body.code).join(','));
      for (const r of results.filter((x) => x.status !== 200)) assert.ok(['factor_invalid', 'stepup_not_pending', 'challenge_required', 'challenge_attempts_exhausted'].includes(r.body.code), r.body.code);
    });

    it('refused: another user\'s credential (not offered to this step-up), or another user\'s key under my credential id', async () => {
      const s = await create();
      const t = ticketed(tg, s);
      const started = await t.challenge();
      const bobs = await t.verify(bobSynced.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID }));
      assert.equal(bobs.status, 400);
      assert.equal(bobs.body.code, 'factor_not_allowed');
      const relabelled = { ...bobSynced.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID, flags: { be: false } }), id: aliceKey.credentialId, rawId: aliceKey.credentialId };
      const forged = await t.verify(relabelled);
      assert.equal(forged.status, 401);
      assert.deepEqual((await failures(s.stepup_id)).map((f) => f.detail), ['signature_invalid']);
      // Bob's own step-up never offers alice's credentials.
      const mine = await create('bob');
      const offered = await ticketed(tg, mine).challenge();
      assert.deepEqual(offered.body.options.allowCredentials.map((c: { id: string }) => c.id), [bobSynced.credentialId]);
    });

    it('verify without a live challenge is refused and charges nothing; an expired challenge is refused', async () => {
      const s = await create();
      const t = ticketed(tg, s);
      const none = await t.verify(aliceKey.assert({ challenge: 'AAAAAAAAAAAAAAAAAAAAAA', origin: ORIGIN, rpId: RP_ID }));
      assert.equal(none.status, 400);
      assert.equal(none.body.code, 'challenge_required');
      const started = await t.challenge();
      tg.clock.advance(151);
      const late = await t.verify(aliceKey.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID }));
      assert.equal(late.status, 400);
      assert.equal(late.body.code, 'challenge_required');
      assert.equal(await status(s.stepup_id), 'pending');
    });

    it('malformed credentials are 4xx with a pointer, never a 500', async () => {
      const s = await create();
      const t = ticketed(tg, s);
      await t.challenge();
      for (const credential of [{}, { id: 'x', rawId: 'x', type: 'public-key', response: {} }, { id: aliceKey.credentialId, rawId: aliceKey.credentialId, type: 'public-key', response: { clientDataJSON: '!!!', authenticatorData: 'x', signature: 'x' } }]) {
        const res = await t.verify(credential);
        assert.ok(res.status === 400 || res.status === 401, `${res.status} ${res.text}`);
      }
      const notObject = await tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'webauthn', credential: 'nope' });
      assert.equal(notObject.status, 400);
      assert.equal(notObject.body.invalid_params[0].pointer, '/credential');
    });

    it('counter regression: refused, the credential flagged and audited, and not offered again', async () => {
      const key = new SoftCredential({ counter: 40 });
      const carol = await makeUser(tg.gw, `carol-${dialect}`);
      const session = await signIn(tg, `carol-${dialect}`, PASSWORD);
      const factorId = await enrolSoft(tg, session, key, 'Key with a counter');
      const first = await create(carol.username);
      assert.equal((await answer(tg, first, key)).res.status, 200);
      const stored = key.counter;
      const s = await create(carol.username);
      const { res } = await answer(tg, s, key, { counter: stored - 3 });
      assert.equal(res.status, 401);
      assert.deepEqual((await failures(s.stepup_id)).map((f) => f.detail), ['counter_regressed']);
      const row = await tg.gw.store.db.selectFrom('factors').select(['params', 'counter']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.equal(row.counter, stored);
      assert.equal(JSON.parse(row.params).flagReason, 'counter_regressed');
      const flagged = await tg.gw.store.db.selectFrom('audit_log').select(['data', 'subject']).where('type', '=', 'factor.flagged').execute();
      const mine = flagged.map((f) => ({ ...JSON.parse(f.data), subject: f.subject })).find((f) => f.factorId === factorId);
      assert.deepEqual({ reason: mine.reason, policy: mine.policy, stored: mine.stored, presented: mine.presented, subject: mine.subject }, { reason: 'counter_regressed', policy: 'refuse', stored, presented: stored - 3, subject: carol.id });
      // Even a "good" counter is no longer accepted: a clone may exist.
      const later = await create(carol.username);
      const refused = await ticketed(tg, later).challenge();
      assert.equal(refused.status, 400);
      assert.equal(refused.body.code, 'factor_not_allowed');
      // The listing shows the flag.
      const listed = await tg.http().get('/v1/me/factors').set('Cookie', session.cookie);
      assert.ok(listed.body.factors.find((f: { id: string }) => f.id === factorId).details.flaggedAt > 0);
    });

    it('two gateway processes on one database: one assertion completes once', async () => {
      const store2 = await tg.database.open();
      const gw2 = await createGateway(tg.config, { clock: tg.clock, logger: createLogger('silent'), store: store2 });
      try {
        const other = request(createApp(gw2).app);
        const s = await create();
        const started = await ticketed(tg, s).challenge();
        const assertion = aliceKey.assert({ challenge: started.body.options.challenge, origin: ORIGIN, rpId: RP_ID });
        const send = (agent: ReturnType<typeof request>) => agent.post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'webauthn', credential: assertion });
        const results = await Promise.all([...Array.from({ length: 4 }, () => send(tg.http())), ...Array.from({ length: 4 }, () => send(other))]);
        assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => `${r.status}:${r.body.code}`).join(','));
      } finally {
        await gw2.close();
        await store2.close();
      }
    });
  });

  describe(`webauthn step-up, counterRegression: flag-only (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    const key = new SoftCredential({ counter: 100 });
    let factorId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { ...WEBAUTHN_TEST_CONFIG, webauthn: { counterRegression: 'flag-only' } } });
      await setPolicies(tg.gw, policies);
      await makeUser(tg.gw, 'dave');
      pay = await makeClient(tg.gw, 'pay', [PAY]);
      factorId = await enrolSoft(tg, await signIn(tg, 'dave', PASSWORD), key);
    });
    after(async () => {
      await tg.close();
    });

    it('a regressed counter is accepted, flagged and audited; the stored counter never goes back', async () => {
      const s = (await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'dave', action: PAY, context: CONTEXT })).body as StepUpHandle;
      const { res } = await answer(tg, s, key, { counter: 7 });
      assert.equal(res.status, 200, res.text);
      const row = await tg.gw.store.db.selectFrom('factors').select(['params', 'counter']).where('id', '=', factorId).executeTakeFirstOrThrow();
      assert.equal(row.counter, 100);
      assert.equal(JSON.parse(row.params).flagReason, 'counter_regressed');
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'factor.flagged').execute();
      assert.equal(audit.length, 1);
      assert.equal(JSON.parse(audit[0]!.data).policy, 'flag-only');
      // Still usable under flag-only.
      const next = (await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'dave', action: PAY, context: CONTEXT })).body as StepUpHandle;
      assert.equal((await answer(tg, next, key, { counter: 101 })).res.status, 200);
    });
  });
}

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { listen, makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { setUserStatus } from '../../src/flows/users.ts';

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '120.00', currency: 'CNY', payee: 'shop-42', deviceId: 'dev-1', codeCount: 1, offline: false };

const policies = [
  {
    id: 'pwd-small',
    action: ACTION,
    priority: 10,
    when: { amount: { lte: '1000.00', currency: 'CNY' } },
    require: { anyOf: [['password']] },
    acr: 'urn:stepgate:aal1' as const,
    tokenTtlSeconds: 120,
  },
  {
    id: 'totp-large',
    action: ACTION,
    priority: 20,
    require: { anyOf: [['totp']] },
    acr: 'urn:stepgate:aal2' as const,
  },
];

for (const dialect of testDialects()) {
  describe(`step-up flow (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let other: Awaited<ReturnType<typeof makeClient>>;
    let userId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 2 } } });
      await setPolicies(tg.gw, policies);
      userId = (await makeUser(tg.gw, 'alice')).id;
      pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
      other = await makeClient(tg.gw, 'another service', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    function create(body: Record<string, unknown> = {}, auth = pay.basic) {
      return tg.http().post('/v1/stepup').set('Authorization', auth).send({ subject: 'alice', action: ACTION, context: CONTEXT, binding_message: 'Pay 120.00 CNY to shop-42', ...body });
    }

    function verify(id: string, ticket: string, body: Record<string, unknown>) {
      return tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send(body);
    }

    async function token(id: string, auth = pay.basic) {
      tg.clock.advance(3); // respect the polling interval
      return tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', auth).send();
    }

    it('end to end: create, complete with a password, fetch the token once, the verifier accepts it once', async () => {
      const created = await create();
      assert.equal(created.status, 201, created.text);
      const { stepup_id: id, ticket, user_url: userUrl, expires_in: expiresIn, interval, acr, options } = created.body;
      assert.match(id, /^stp_/);
      assert.ok(userUrl.startsWith(`${tg.config.http.publicUrl}/stepup/${id}?ticket=`));
      assert.equal(expiresIn, 300);
      assert.equal(interval, 2);
      assert.equal(acr, 'urn:stepgate:aal1');
      assert.deepEqual(options, [['password']]);

      const pending = await token(id);
      assert.equal(pending.status, 400);
      assert.equal(pending.body.code, 'authorization_pending');

      const status = await tg.http().get(`/v1/stepup/${id}`).set('Authorization', `Ticket ${ticket}`).expect(200);
      assert.equal(status.body.status, 'pending');
      assert.equal(status.body.binding_message, 'Pay 120.00 CNY to shop-42');
      assert.deepEqual(status.body.context, CONTEXT);

      const done = await verify(id, ticket, { factor: 'password', password: PASSWORD });
      assert.equal(done.status, 200, done.text);
      assert.equal(done.body.completed, true);

      const got = await token(id);
      assert.equal(got.status, 200, got.text);
      assert.equal(got.body.token_type, 'stepup+jwt');
      assert.equal(got.body.expires_in, 120);
      const again = await token(id);
      assert.equal(again.status, 400);
      assert.equal(again.body.code, 'invalid_grant');

      const server = await listen(tg.app);
      try {
        const jwks = createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json`, clock: tg.clock });
        const replayStore = new MemoryReplayStore();
        const options = { issuer: tg.config.http.publicUrl, audience: pay.clientId, jwks, replayStore, clock: tg.clock, expectedAction: ACTION, expectedContext: CONTEXT, expectedSubject: userId, requiredAcr: 'urn:stepgate:aal1' as const };
        const claims = await verifyStepUpToken(got.body.step_up_token, options);
        assert.equal(claims.sub, userId);
        assert.equal(claims.txn, id);
        assert.deepEqual(claims.amr, ['pwd']);
        assert.deepEqual(claims.authorization_details, [{ type: ACTION, ...CONTEXT }]);
        await assert.rejects(verifyStepUpToken(got.body.step_up_token, options), (err: { code?: string }) => err.code === 'replayed');
        // Another relying service cannot use the token.
        await assert.rejects(verifyStepUpToken(got.body.step_up_token, { ...options, audience: other.clientId, replayStore: new MemoryReplayStore() }));
      } finally {
        await server.close();
      }
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', userId).execute();
      const types = audit.map((r) => r.type);
      for (const t of ['stepup.created', 'stepup.factor_verified', 'stepup.completed', 'stepup.token_issued']) assert.ok(types.includes(t), t);
      assert.ok(!tg.logs.text.includes(PASSWORD));
      assert.ok(!tg.logs.text.includes(ticket));
      assert.ok(!tg.logs.text.includes(got.body.step_up_token.split('.')[2]));
    });

    it('the token is handed out exactly once under concurrent polls', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      await verify(id, ticket, { factor: 'password', password: PASSWORD }).expect(200);
      tg.clock.advance(3);
      const results = await Promise.all(Array.from({ length: 10 }, () => tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send()));
      assert.equal(results.filter((r) => r.status === 200).length, 1);
      for (const r of results.filter((x) => x.status !== 200)) assert.equal(r.body.code, 'invalid_grant');
    });

    it('polling faster than the interval gets slow_down', async () => {
      const { stepup_id: id } = (await create()).body;
      const first = await tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
      assert.equal(first.body.code, 'authorization_pending');
      assert.equal(first.headers['retry-after'], '2');
      const fast = await tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
      assert.equal(fast.status, 400);
      assert.equal(fast.body.code, 'slow_down');
      // RFC 8628 §3.5: the interval grew by 5 s, for this poll and every later one.
      assert.equal(fast.headers['retry-after'], '7');
      tg.clock.advance(2);
      const stillFast = await tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
      assert.equal(stillFast.body.code, 'slow_down');
      assert.equal(stillFast.headers['retry-after'], '12');
      tg.clock.advance(12);
      const ok = await tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
      assert.equal(ok.body.code, 'authorization_pending');
      assert.equal(ok.headers['retry-after'], '12');
    });

    it('a poller that ignores slow_down is slowed to once a minute, and still gets the token at once when the user is done', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      const poll = () => tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
      assert.equal((await poll()).body.code, 'authorization_pending');
      let last: Awaited<ReturnType<typeof poll>> | undefined;
      for (let i = 0; i < 14; i++) last = await poll();
      assert.equal(last?.body.code, 'slow_down');
      assert.equal(last?.headers['retry-after'], '60');
      tg.clock.advance(30);
      assert.equal((await poll()).body.code, 'slow_down');
      await verify(id, ticket, { factor: 'password', password: PASSWORD }).expect(200);
      const issued = await poll();
      assert.equal(issued.status, 200, issued.text);
    });

    it('a user disabled after completing (fraud lock) gets no token: access_denied, audited once', async () => {
      const dora = await makeUser(tg.gw, 'dora');
      const { stepup_id: id, ticket } = (await create({ subject: 'dora' })).body;
      await verify(id, ticket, { factor: 'password', password: PASSWORD }).expect(200);
      await setUserStatus(tg.gw, dora.id, 'disabled', { actor: 'test' }, 'card reported stolen');
      const refused = await token(id);
      assert.equal(refused.status, 403, refused.text); // as for a refused or cancelled step-up
      assert.equal(refused.body.code, 'access_denied');
      assert.equal((await token(id)).body.code, 'access_denied');
      const events = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.denied').execute();
      assert.equal(events.filter((e) => e.data.includes(id) && e.data.includes('user_disabled')).length, 1);
      const issued = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.token_issued').execute();
      assert.ok(!issued.some((e) => e.data.includes(id)));
    });

    it('another client’s step-up answers exactly as one that does not exist, for the token and for cancel, and changes nothing', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      await verify(id, ticket, { factor: 'password', password: PASSWORD }).expect(200);
      const pendingId = (await create()).body.stepup_id as string;
      const rowsBefore = await tg.gw.store.db.selectFrom('stepups').selectAll().where('id', 'in', [id, pendingId]).orderBy('id').execute();
      const auditBefore = await tg.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      // What a client sees, minus the request id: status, the headers that matter, the body.
      const seen = async (req: Promise<{ status: number; headers: Record<string, string>; body: Record<string, unknown> }>) => {
        const res = await req;
        const { request_id: _ignored, ...body } = res.body;
        return { status: res.status, type: res.headers['content-type'], cache: res.headers['cache-control'], retry: res.headers['retry-after'], body };
      };
      const unknownId = `stp_${'x'.repeat(24)}`;
      for (const [label, send] of [
        ['token', (stepUpId: string) => token(stepUpId, other.basic)],
        ['cancel', (stepUpId: string) => tg.http().delete(`/v1/stepup/${stepUpId}`).set('Authorization', other.basic)],
      ] as const) {
        const missing = await seen(send(unknownId));
        assert.equal(missing.status, 404, label);
        assert.equal(missing.body.code, 'stepup_not_found', label);
        assert.deepEqual(await seen(send(id)), missing, `${label}: a completed step-up of another client`);
        assert.deepEqual(await seen(send(pendingId)), missing, `${label}: a pending step-up of another client`);
      }
      // Nothing moved: no poll time, no slow_down, no cancellation, no audit record.
      assert.deepEqual(await tg.gw.store.db.selectFrom('stepups').selectAll().where('id', 'in', [id, pendingId]).orderBy('id').execute(), rowsBefore);
      const auditAfter = await tg.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      assert.equal(Number(auditAfter.n), Number(auditBefore.n));
      // The operator sees the attempt (the id and the client that asked) in the log.
      assert.match(tg.logs.text, new RegExp(`"stepupId":"${pendingId}","clientId":"${other.clientId}"[^\n]*step-up not found for this client`));
      assert.equal((await token(id)).status, 200);
    });

    it('a wrong ticket, or another client, does not even get the step-up read: its row is loaded only for its owner', async () => {
      // Proven with a row that cannot be parsed: reading it would be a 500, not the refusal an
      // unknown id gets (and it was measurably slower than an unknown id: bench/notes/fix2.md).
      const { stepup_id: id, ticket } = (await create()).body;
      const { context } = await tg.gw.store.db.selectFrom('stepups').select('context').where('id', '=', id).executeTakeFirstOrThrow();
      await tg.gw.store.db.updateTable('stepups').set({ context: '{not json' }).where('id', '=', id).execute();
      try {
        const unknownId = `stp_${'y'.repeat(24)}`;
        const wrongTicket = 'w'.repeat(43);
        for (const path of ['', '/verify', '/challenge']) {
          const send = (stepUpId: string) => (path === '' ? tg.http().get(`/v1/stepup/${stepUpId}`) : tg.http().post(`/v1/stepup/${stepUpId}${path}`).send(path === '/verify' ? { factor: 'password', password: PASSWORD } : { factor: 'sms_otp' }));
          const unknown = await send(unknownId).set('Authorization', `Ticket ${wrongTicket}`);
          const wrong = await send(id).set('Authorization', `Ticket ${wrongTicket}`);
          assert.equal(unknown.status, 401, `${path}: ${unknown.text}`);
          assert.equal(wrong.status, 401, `${path}: ${wrong.text}`);
          assert.equal(wrong.body.code, 'invalid_ticket');
          assert.equal(wrong.body.code, unknown.body.code);
        }
        for (const res of [await token(id, other.basic), await tg.http().delete(`/v1/stepup/${id}`).set('Authorization', other.basic)]) {
          assert.equal(res.status, 404, res.text);
          assert.equal(res.body.code, 'stepup_not_found');
        }
      } finally {
        await tg.gw.store.db.updateTable('stepups').set({ context }).where('id', '=', id).execute();
      }
      // Restored, the owner's ticket works: the refusals above were for the wrong caller alone.
      assert.equal((await tg.http().get(`/v1/stepup/${id}`).set('Authorization', `Ticket ${ticket}`)).status, 200);
    });

    it('client authentication is required and bad credentials are refused', async () => {
      const res = await create({}, `Basic ${Buffer.from(`${pay.clientId}:wrong`).toString('base64')}`);
      assert.equal(res.status, 401);
      assert.equal(res.body.code, 'invalid_client');
      const none = await tg.http().post('/v1/stepup').send({ subject: 'alice', action: ACTION, context: CONTEXT });
      assert.equal(none.status, 401);
    });

    it('a wrong password counts, says nothing specific, and the ticket is bound to its step-up', async () => {
      const a = (await create()).body;
      const b = (await create()).body;
      const wrong = await verify(a.stepup_id, a.ticket, { factor: 'password', password: 'not the password' });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.body.code, 'factor_invalid');
      const st = await tg.http().get(`/v1/stepup/${a.stepup_id}`).set('Authorization', `Ticket ${a.ticket}`).expect(200);
      assert.equal(st.body.attempts_left, 4);
      const crossed = await verify(a.stepup_id, b.ticket, { factor: 'password', password: PASSWORD });
      assert.equal(crossed.status, 401);
      assert.equal(crossed.body.code, 'invalid_ticket');
      const noTicket = await tg.http().post(`/v1/stepup/${a.stepup_id}/verify`).send({ factor: 'password', password: PASSWORD });
      assert.equal(noTicket.body.code, 'invalid_ticket');
    });

    it('ticket reuse after completion is rejected', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      await verify(id, ticket, { factor: 'password', password: PASSWORD }).expect(200);
      const reuse = await verify(id, ticket, { factor: 'password', password: PASSWORD });
      assert.equal(reuse.status, 409);
      assert.equal(reuse.body.code, 'stepup_not_pending');
    });

    it('attempts are limited per transaction, also when the guesses arrive in parallel', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      const results = await Promise.all(Array.from({ length: 8 }, () => verify(id, ticket, { factor: 'password', password: 'wrong guess!!' })));
      const codes = results.map((r) => r.body.code).sort();
      assert.equal(codes.filter((c) => c === 'factor_invalid').length, 5, codes.join(','));
      assert.ok(codes.filter((c) => c !== 'factor_invalid').every((c) => c === 'attempts_exhausted' || c === 'stepup_not_pending'), codes.join(','));
      const row = await tg.gw.store.db.selectFrom('stepups').select(['attempts', 'status']).where('id', '=', id).executeTakeFirstOrThrow();
      assert.equal(row.attempts, 5);
      assert.equal(row.status, 'denied');
      // Even the right password no longer helps, and the client hears access_denied.
      assert.equal((await verify(id, ticket, { factor: 'password', password: PASSWORD })).status, 409);
      assert.equal((await token(id)).body.code, 'access_denied');
      // The factor's own failure counter was charged too; a success resets it.
      const f = await tg.gw.store.db.selectFrom('factors').select('failures').where('user_id', '=', userId).where('type', '=', 'password').executeTakeFirstOrThrow();
      assert.ok(f.failures >= 5);
      const next = (await create()).body;
      await verify(next.stepup_id, next.ticket, { factor: 'password', password: PASSWORD }).expect(200);
      const reset = await tg.gw.store.db.selectFrom('factors').select('failures').where('user_id', '=', userId).where('type', '=', 'password').executeTakeFirstOrThrow();
      assert.equal(reset.failures, 0);
    });

    it('expiry: after the transaction lifetime the user cannot complete and the client gets expired_token', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      tg.clock.advance(301);
      const late = await verify(id, ticket, { factor: 'password', password: PASSWORD });
      assert.equal(late.status, 410);
      assert.equal(late.body.code, 'stepup_expired');
      assert.equal((await token(id)).body.code, 'expired_token');
    });

    it('a completed step-up not collected in time expires too', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      await verify(id, ticket, { factor: 'password', password: PASSWORD }).expect(200);
      tg.clock.advance(301);
      assert.equal((await token(id)).body.code, 'expired_token');
    });

    it('cancel: the user can no longer complete and the client gets access_denied', async () => {
      const { stepup_id: id, ticket } = (await create()).body;
      await tg.http().delete(`/v1/stepup/${id}`).set('Authorization', pay.basic).expect(204);
      assert.equal((await verify(id, ticket, { factor: 'password', password: PASSWORD })).status, 409);
      assert.equal((await token(id)).body.code, 'access_denied');
    });

    it('deny by default: an action without a policy, or one the client may not use', async () => {
      const all = await makeClient(tg.gw, 'wide client', [ACTION, 'account.close']);
      const res = await create({ action: 'account.close' }, all.basic);
      assert.equal(res.status, 403);
      assert.equal(res.body.code, 'access_denied');
      const notAllowed = await create({ action: 'account.close' });
      assert.equal(notAllowed.status, 403);
      assert.equal(notAllowed.body.code, 'forbidden');
    });

    it('enrollment_required when the user has nothing that satisfies the matching policy', async () => {
      const res = await create({ context: { ...CONTEXT, amount: '5000.00' } });
      assert.equal(res.status, 409);
      assert.equal(res.body.code, 'enrollment_required');
    });

    it('bad input is a 4xx naming the field, and creates nothing', async () => {
      const before = await tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      const cases: [Record<string, unknown>, string][] = [
        [{ subject: 'nobody' }, '/subject'],
        [{ context: { ...CONTEXT, amount: 120 } }, '/context/amount'],
        [{ context: { ...CONTEXT, amount: '1e3' } }, '/context/amount'],
        [{ context: { ...CONTEXT, type: 'x' } }, '/context'],
        [{ action: 'Not An Action' }, '/action'],
        [{ redirect_uri: 'https://evil.example/cb' }, '/redirect_uri'],
        [{ surprise: 1 }, '/surprise'],
        // What the user approves must reach the token unchanged and read as what it is.
        [{ context: JSON.parse('{"amount":"120.00","currency":"CNY","__proto__":"x"}') }, '/context/__proto__'],
        [{ context: JSON.parse('{"amount":"120.00","currency":"CNY","codeCount":9007199254740993}') }, '/context/codeCount'],
        [{ context: { ...CONTEXT, codeCount: 1.5 } }, '/context/codeCount'],
        [{ context: { ...CONTEXT, payee: 'shop\u202egnp.exe' } }, '/context/payee'],
        [{ context: { ...CONTEXT, payee: 'shop-42\nshop-43' } }, '/context/payee'],
        [{ context: { ...CONTEXT, payee: 'shop-42\u2028Amount: 1.00' } }, '/context/payee'],
        [{ context: { ...CONTEXT, payee: 'shop-\ud800' } }, '/context/payee'],
        [{ binding_message: 'Pay 120.00 CNY to \u2067shop-42\u2069' }, '/binding_message'],
      ];
      for (const [body, pointer] of cases) {
        const res = await create(body);
        assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.status} ${res.text}`);
        assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
        assert.ok(res.body.invalid_params.some((p: { pointer: string }) => p.pointer === pointer), `${pointer} in ${res.text}`);
      }
      const unknownFactor = await verify('stp_doesnotexist000', 'x'.repeat(43), { factor: 'fingerprint' });
      assert.equal(unknownFactor.status, 400);
      const after = await tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      assert.equal(Number(after.n), Number(before.n));
    });
  });
}

if (testDialects().includes('postgres')) {
  describe('step-up across two gateway processes on one PostgreSQL', () => {
    it('created on one, completed on the other, token handed out once across both', async () => {
      const a = await createTestGateway({ dialect: 'postgres' });
      const b = await createTestGateway({ dialect: 'postgres', database: a.database, clock: a.clock });
      try {
        await setPolicies(a.gw, policies);
        await makeUser(a.gw, 'bob');
        const pay = await makeClient(a.gw, 'pay', [ACTION]);
        const created = await a.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'bob', action: ACTION, context: CONTEXT });
        assert.equal(created.status, 201, created.text);
        const { stepup_id: id, ticket } = created.body;
        await b.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'password', password: PASSWORD }).expect(200);
        a.clock.advance(3);
        const polls = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send()),
        );
        assert.equal(polls.filter((r) => r.status === 200).length, 1, polls.map((r) => r.status).join(','));
        // Both processes publish the same keys, so either one's JWKS verifies the token.
        const jwksA = (await a.http().get('/.well-known/jwks.json')).body;
        const jwksB = (await b.http().get('/.well-known/jwks.json')).body;
        assert.deepEqual(jwksA, jwksB);
      } finally {
        await b.close();
        await a.close();
      }
    });
  });
}

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type request from 'supertest';
import { createUser, type Role } from '../../src/flows/users.ts';
import { DEMO_POLICIES } from '../../src/policy/demo-policies.ts';
import { diffPolicySets, policySetDiffIsEmpty } from '../../src/policy/diff-policy-sets.ts';
import { policyDocumentSchema } from '../../src/policy/policy-schema.ts';
import { velocityFacts } from '../../src/stepup/policy-store.ts';
import type { TableName } from '../../src/store/primitives.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'a long enough passphrase 7';
const ACTION = 'payment_code.issue';

/** Password up to 1,000.00 CNY; above that (or anything unclear) a possession factor. */
const SET_A = [
  { id: 'pwd-small', action: ACTION, priority: 10, when: { amount: { lte: '1000.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
  { id: 'strict', action: ACTION, priority: 20, require: { anyOf: [['webauthn'], ['hardware_otp', 'password']] }, acr: 'urn:stepgate:aal2' },
];

interface Session {
  agent: request.Agent;
  csrf: string;
  userId: string;
}

interface Problem {
  code: string;
  invalid_params?: { pointer: string; reason: string }[];
}

function param(body: Problem, pointer: string): { pointer: string; reason: string } | undefined {
  return body.invalid_params?.find((p) => p.pointer === pointer);
}

for (const dialect of testDialects()) {
  describe(`policy admin API (${dialect})`, () => {
    let t: TestGateway;
    const as: Record<string, Session> = {};

    async function signIn(username: string): Promise<Session> {
      const agent = t.agent();
      const res = await agent.post('/v1/login').send({ username, password: PASSWORD });
      assert.equal(res.status, 200, `${username}: ${res.text}`);
      return { agent, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
    }

    const get = (s: Session, path: string) => s.agent.get(path);
    const put = (s: Session, path: string, body: object) => s.agent.put(path).set('X-CSRF-Token', s.csrf).send(body);
    const post = (s: Session, path: string, body: object) => s.agent.post(path).set('X-CSRF-Token', s.csrf).send(body);
    const del = (s: Session, path: string) => s.agent.delete(path).set('X-CSRF-Token', s.csrf);

    async function count(table: TableName): Promise<number> {
      const row = await t.gw.store.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    }
    async function currentVersion(): Promise<number> {
      return (await get(as.root!, '/v1/admin/policies').expect(200)).body.version as number;
    }
    async function lastPolicyEvent() {
      const row = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'policy.changed').orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
      return { ...row, data: JSON.parse(row.data) as Record<string, unknown> };
    }

    before(async () => {
      t = await createTestGateway({ dialect });
      const people: [string, Role[]][] = [
        ['root', ['admin']],
        ['auditor', ['auditor']],
        ['helpdesk', ['helpdesk']],
      ];
      for (const [username, roles] of people) {
        await createUser(t.gw, { username, password: PASSWORD, roles }, { actor: 'test' });
        as[username] = await signIn(username);
      }
    });
    after(async () => {
      await t.close();
    });

    it('a fresh database starts with the demo set as version 1, stored once and audited', async () => {
      const res = await get(as.auditor!, '/v1/admin/policies');
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, 1);
      assert.equal(res.body.createdBy, 'config');
      const stored = policyDocumentSchema.parse({ policies: res.body.policies }).policies;
      assert.ok(policySetDiffIsEmpty(diffPolicySets(DEMO_POLICIES, stored)), 'version 1 is the demo set');
      const seeded = await lastPolicyEvent();
      assert.equal(seeded.actor, 'config');
      assert.equal(seeded.data.version, 1);
      assert.deepEqual(seeded.data.added, ['small-payments', 'large-payments', 'offline-seed']);

      // Another process starting on the same database does not seed again.
      const second = await createTestGateway({ dialect, database: t.database, clock: t.clock });
      await second.close();
      assert.equal(await count('policy_sets'), 1);
      assert.equal((await t.gw.store.db.selectFrom('audit_log').select('seq').where('type', '=', 'policy.changed').execute()).length, 1);
    });

    it('PUT stores the whole set as version N+1 with a policy.changed audit row; the same set again stores nothing', async () => {
      const base = await currentVersion();
      const rows = await count('policy_sets');
      const res = await put(as.root!, '/v1/admin/policies', { policies: SET_A, comment: 'password for small amounts', baseVersion: base });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, base + 1);
      assert.equal(res.body.previousVersion, base);
      assert.equal(res.body.changed, true);
      assert.equal(res.body.createdBy, as.root!.userId);
      assert.equal(res.body.comment, 'password for small amounts');
      assert.deepEqual(res.body.policies.map((p: { id: string }) => p.id), ['pwd-small', 'strict']);
      assert.equal(res.body.policies[0].tokenTtlSeconds, 120, 'defaults are written out');
      assert.equal(await count('policy_sets'), rows + 1);

      const event = await lastPolicyEvent();
      assert.equal(event.actor, as.root!.userId);
      assert.deepEqual(event.data, {
        version: base + 1,
        previousVersion: base,
        comment: 'password for small amounts',
        added: ['pwd-small', 'strict'],
        removed: ['small-payments', 'large-payments', 'offline-seed'],
        changed: [],
      });

      const current = await get(as.helpdesk!, '/v1/admin/policies').expect(200);
      assert.equal(current.body.version, base + 1);
      const history = await get(as.auditor!, '/v1/admin/policies/versions').expect(200);
      assert.deepEqual(history.body.versions.map((v: { version: number }) => v.version).slice(0, 2), [base + 1, base]);
      assert.equal(history.body.versions[0].comment, 'password for small amounts');
      const old = await get(as.auditor!, `/v1/admin/policies/versions/${base}`).expect(200);
      assert.equal(old.body.version, base);
      const diff = await get(as.auditor!, `/v1/admin/policies/diff?from=${base}&to=${base + 1}`).expect(200);
      assert.deepEqual(diff.body.diff.added.map((e: { id: string }) => e.id), ['pwd-small', 'strict']);
      assert.match(diff.body.text, /^\+ pwd-small/m);
      assert.equal((await get(as.auditor!, '/v1/admin/policies/versions/999').send()).status, 404);
      assert.equal((await get(as.auditor!, '/v1/admin/policies/diff?from=abc').send()).status, 400);

      const audits = await count('audit_log');
      const again = await put(as.root!, '/v1/admin/policies', { policies: [...SET_A].reverse() });
      assert.equal(again.status, 200, again.text);
      assert.equal(again.body.changed, false);
      assert.equal(again.body.version, base + 1);
      assert.equal(await count('policy_sets'), rows + 1);
      assert.equal(await count('audit_log'), audits);
    });

    it('rejects each kind of invalid set with 400, a pointer and the problem code, and stores nothing', async () => {
      const rows = await count('policy_sets');
      const audits = await count('audit_log');
      const [small, strict] = SET_A as [(typeof SET_A)[0], (typeof SET_A)[1]];
      const cases: [string, unknown[], string, string][] = [
        ['unknown factor type', [{ ...small, require: { anyOf: [['fingerprint']] } }, strict], '/policies/0/require/anyOf/0/0', 'unknown_factor_type:'],
        ['unreachable policy', [{ ...strict, priority: 5 }, small], '/policies/1', 'unreachable:'],
        ['acr not reachable', [{ ...small, acr: 'urn:stepgate:aal2' }, strict], '/policies/0/require/anyOf/0', 'acr_unreachable:'],
        ['duplicate id', [small, { ...strict, id: 'pwd-small' }], '/policies/1/id', 'duplicate_id:'],
        ['same priority', [small, { ...strict, priority: 10 }], '/policies/1/priority', 'ambiguous_priority:'],
        ['schema: unknown acr', [{ ...small, acr: 'urn:stepgate:aal9' }], '/policies/0/acr', 'invalid:'],
        ['schema: unknown field', [{ ...small, priorty: 1 }], '/policies/0/priorty', 'invalid:'],
        ['schema: amount as a number', [{ ...small, when: { amount: { lte: 1000, currency: 'CNY' } } }, strict], '/policies/0/when/amount/lte', 'invalid:'],
        // Money (src/verifier/money.ts): a real ISO 4217 currency, bounds no finer than its minor unit.
        ['unknown currency', [{ ...small, when: { amount: { lte: '1000.00', currency: 'ZZZ' } } }, strict], '/policies/0/when/amount/currency', 'currency_unsupported:'],
        ['currency without minor units', [{ ...small, when: { amount: { lte: '1', currency: 'XAU' } } }, strict], '/policies/0/when/amount/currency', 'currency_unsupported:'],
        ['bound finer than the currency', [{ ...small, when: { amount: { lte: '1000.005', currency: 'CNY' } } }, strict], '/policies/0/when/amount/lte', 'amount_precision_exceeded:'],
        ['yen bound with decimals', [{ ...small, when: { amount: { gt: '0.5', lte: '10000', currency: 'JPY' } } }, strict], '/policies/0/when/amount/gt', 'amount_precision_exceeded:'],
        ['velocity limit finer than the currency', [{ ...small, when: { velocity: { windowSeconds: 60, maxAmount: '500.5', currency: 'JPY' } } }, strict], '/policies/0/when/velocity/maxAmount', 'amount_precision_exceeded:'],
        ['velocity in an unknown currency', [{ ...small, when: { velocity: { windowSeconds: 60, maxAmount: '500', currency: 'ABC' } } }, strict], '/policies/0/when/velocity/currency', 'currency_unsupported:'],
      ];
      for (const [name, policies, pointer, code] of cases) {
        const res = await put(as.root!, '/v1/admin/policies', { policies });
        assert.equal(res.status, 400, `${name}: ${res.text}`);
        assert.equal(res.body.code, 'validation_failed', name);
        const p = param(res.body, pointer);
        assert.ok(p !== undefined, `${name}: ${pointer} in ${res.text}`);
        assert.ok(p.reason.startsWith(code), `${name}: ${p.reason}`);
      }
      const notAList = await put(as.root!, '/v1/admin/policies', { policies: 'all of them' });
      assert.equal(notAList.status, 400);
      assert.ok(param(notAList.body, '/policies') !== undefined, notAList.text);
      const unknownField = await put(as.root!, '/v1/admin/policies', { policies: SET_A, force: true });
      assert.equal(unknownField.status, 400);
      assert.ok(param(unknownField.body, '/force') !== undefined);
      assert.equal(await count('policy_sets'), rows);
      assert.equal(await count('audit_log'), audits);
    });

    it('a stale baseVersion is refused with 409 and stores nothing', async () => {
      const base = await currentVersion();
      const rows = await count('policy_sets');
      const res = await put(as.root!, '/v1/admin/policies', { policies: [SET_A[1]], baseVersion: base - 1 });
      assert.equal(res.status, 409, res.text);
      assert.equal(res.body.code, 'conflict');
      const ahead = await put(as.root!, '/v1/admin/policies', { policies: [SET_A[1]], baseVersion: base + 1 });
      assert.equal(ahead.status, 409);
      const delStale = await del(as.root!, `/v1/admin/policies/strict?baseVersion=${base - 1}`);
      assert.equal(delStale.status, 409);
      assert.equal(await count('policy_sets'), rows);
    });

    it('concurrent saves never lose an update: N+1 and N+2, or a 409', async () => {
      const sets = (n: number) => Array.from({ length: n }, (_, i) => [{ ...SET_A[1], id: `strict-${i}` }]);
      const base = await currentVersion();
      // Two whole sets at once, without baseVersion: both stored, one after the other.
      const two = await Promise.all(sets(2).map((policies) => put(as.root!, '/v1/admin/policies', { policies })));
      const stored = two.filter((r) => r.status === 200);
      for (const r of two) assert.ok(r.status === 200 || (r.status === 409 && r.body.code === 'conflict'), `${r.status} ${r.text}`);
      assert.deepEqual(stored.map((r) => r.body.version as number).sort(), Array.from({ length: stored.length }, (_, i) => base + 1 + i));
      for (const r of stored) {
        const v = await get(as.root!, `/v1/admin/policies/versions/${r.body.version}`).expect(200);
        assert.deepEqual(v.body.policies, r.body.policies, 'each stored version is the set its response reported');
      }

      // Both edits made against the same version: exactly one wins, the other hears 409.
      const now = await currentVersion();
      const raced = await Promise.all(sets(2).map((policies) => put(as.root!, '/v1/admin/policies', { policies: [...policies, { ...SET_A[0], id: 'x' }], baseVersion: now })));
      assert.deepEqual(raced.map((r) => r.status).sort(), [200, 409], raced.map((r) => r.text).join('\n'));
      assert.equal(await currentVersion(), now + 1);

      // Single-policy adds are re-applied to the newer set: every added policy survives.
      const start = await currentVersion();
      const adds = await Promise.all(
        Array.from({ length: 4 }, (_, i) => post(as.root!, '/v1/admin/policies', { policy: { id: `extra-${i}`, action: `demo.action_${i}`, priority: 1, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' } })),
      );
      for (const r of adds) assert.ok(r.status === 201 || (r.status === 409 && r.body.code === 'conflict'), `${r.status} ${r.text}`);
      const added = adds.filter((r) => r.status === 201);
      assert.ok(added.length >= 1);
      const final = await get(as.root!, '/v1/admin/policies').expect(200);
      assert.equal(final.body.version, start + added.length);
      for (const r of added) {
        const id = (r.body.diff.added as { id: string }[])[0]?.id;
        assert.ok(final.body.policies.some((p: { id: string }) => p.id === id), `${id} survived`);
      }
      const versions = await t.gw.store.db.selectFrom('policy_sets').select('version').orderBy('version').execute();
      assert.deepEqual(versions.map((v) => Number(v.version)), Array.from({ length: versions.length }, (_, i) => i + 1), 'no gaps, no duplicates');
    });

    it('single-policy changes: add, replace and delete, each a new version; errors point into the body', async () => {
      await put(as.root!, '/v1/admin/policies', { policies: SET_A }).expect(200);
      const base = await currentVersion();
      const seed = { id: 'seed', action: 'payment_code.offline_seed', priority: 10, require: { anyOf: [['webauthn']] }, acr: 'urn:stepgate:aal3' };

      const added = await post(as.root!, '/v1/admin/policies', { policy: seed, comment: 'offline seeds', baseVersion: base });
      assert.equal(added.status, 201, added.text);
      assert.equal(added.body.version, base + 1);
      assert.deepEqual(added.body.diff.added.map((e: { id: string }) => e.id), ['seed']);
      assert.equal((await lastPolicyEvent()).data.comment, 'offline seeds');
      const taken = await post(as.root!, '/v1/admin/policies', { policy: seed });
      assert.equal(taken.status, 409);
      assert.ok(param(taken.body, '/policy/id') !== undefined);

      const bad = await post(as.root!, '/v1/admin/policies', { policy: { ...seed, id: 'seed-2', priority: 20, require: { anyOf: [['fingerprint']] } } });
      assert.equal(bad.status, 400);
      assert.ok(param(bad.body, '/policy/require/anyOf/0/0')?.reason.startsWith('unknown_factor_type:'), bad.text);
      // A catch-all in front of existing policies makes them unreachable: named, in the stored set.
      const shadowing = await post(as.root!, '/v1/admin/policies', { policy: { ...SET_A[1], id: 'catch-all', priority: 5 } });
      assert.equal(shadowing.status, 400);
      const unreachable = shadowing.body.invalid_params.find((p: { reason: string }) => p.reason.startsWith('unreachable:'));
      assert.ok(unreachable !== undefined, shadowing.text);
      assert.match(unreachable.pointer, /^\/policies\/\d+$/);
      assert.match(unreachable.reason, /policy (pwd-small|strict)\)$/);

      const replaced = await put(as.root!, '/v1/admin/policies/pwd-small', { policy: { ...SET_A[0], id: undefined, when: { amount: { lte: '500.00', currency: 'CNY' } } } });
      assert.equal(replaced.status, 200, replaced.text);
      assert.equal(replaced.body.version, base + 2);
      assert.deepEqual(replaced.body.diff.changed[0].changes, [{ path: 'when.amount.lte', before: '1000.00', after: '500.00' }]);
      const renamed = await put(as.root!, '/v1/admin/policies/pwd-small', { policy: { ...SET_A[0], id: 'other' } });
      assert.equal(renamed.status, 400);
      assert.ok(param(renamed.body, '/policy/id') !== undefined);
      assert.equal((await put(as.root!, '/v1/admin/policies/no-such', { policy: { ...SET_A[0], id: 'no-such' } })).status, 404);
      assert.equal((await put(as.root!, '/v1/admin/policies/Bad%20Id', { policy: { ...SET_A[0], id: undefined } })).status, 404);

      const removed = await del(as.root!, '/v1/admin/policies/seed?comment=not+yet');
      assert.equal(removed.status, 200, removed.text);
      assert.equal(removed.body.version, base + 3);
      assert.deepEqual(removed.body.diff.removed.map((e: { id: string }) => e.id), ['seed']);
      assert.equal((await lastPolicyEvent()).data.comment, 'not yet');
      assert.equal((await del(as.root!, '/v1/admin/policies/seed')).status, 404);
      assert.equal(await currentVersion(), base + 3);
    });

    it('roles: admins write; auditors and helpdesk read; no session 401; a missing CSRF token 403', async () => {
      const rows = await count('policy_sets');
      const auditorPut = await put(as.auditor!, '/v1/admin/policies', { policies: SET_A });
      assert.equal(auditorPut.status, 403);
      assert.equal(auditorPut.body.code, 'forbidden');
      const helpdeskAdd = await post(as.helpdesk!, '/v1/admin/policies', { policy: { ...SET_A[0], id: 'h' } });
      assert.equal(helpdeskAdd.status, 403);
      assert.equal((await put(as.helpdesk!, '/v1/admin/policies/strict', { policy: SET_A[1] })).status, 403);
      assert.equal((await del(as.auditor!, '/v1/admin/policies/strict')).status, 403);
      for (const s of [as.auditor!, as.helpdesk!]) {
        assert.equal((await get(s, '/v1/admin/policies')).status, 200);
        assert.equal((await get(s, '/v1/admin/policies/versions')).status, 200);
        assert.equal((await post(s, '/v1/admin/policies/evaluate', { action: ACTION, context: {} })).status, 200);
      }
      assert.equal((await t.http().get('/v1/admin/policies')).status, 401);
      const anon = await t.http().put('/v1/admin/policies').send({ policies: SET_A });
      assert.equal(anon.status, 401);
      assert.equal(anon.body.code, 'unauthorized');
      const noCsrf = await as.root!.agent.put('/v1/admin/policies').send({ policies: [SET_A[1]] });
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.code, 'csrf_failed');
      const wrongCsrf = await as.root!.agent.delete('/v1/admin/policies/strict').set('X-CSRF-Token', as.auditor!.csrf);
      assert.equal(wrongCsrf.status, 403);
      assert.equal(await count('policy_sets'), rows);
    });

    it('the dry run gives the decision with reasons for matched and unmatched policies, and writes nothing', async () => {
      await put(as.root!, '/v1/admin/policies', { policies: SET_A }).expect(200);
      const version = await currentVersion();
      const bob = await makeUser(t.gw, 'bob');
      const before = { sets: await count('policy_sets'), stepups: await count('stepups'), audit: await count('audit_log') };
      const evaluate = (body: object) => post(as.auditor!, '/v1/admin/policies/evaluate', body);

      const large = await evaluate({ action: ACTION, context: { amount: '1500.00', currency: 'CNY' }, user: { enrolledFactorTypes: ['webauthn'] } });
      assert.equal(large.status, 200, large.text);
      assert.equal(large.body.decision, 'allow');
      assert.equal(large.body.source, 'current');
      assert.equal(large.body.version, version);
      assert.equal(large.body.policyId, 'strict');
      assert.deepEqual(large.body.satisfiable, [['webauthn']]);
      assert.equal(large.body.enrollmentRequired, false);
      const [first, second] = large.body.reasons as { policyId: string; matched: boolean; conditionsHold: boolean; because: string[] }[];
      assert.equal(first?.policyId, 'pwd-small');
      assert.equal(first?.matched, false);
      assert.ok(first?.because.includes('amount 1500.00 CNY > lte 1000.00'), JSON.stringify(first));
      assert.equal(second?.policyId, 'strict');
      assert.equal(second?.matched, true);

      // A real user: groups and enrolled factors from the database (bob has a password only).
      const forBob = await evaluate({ action: ACTION, context: { amount: '10.00', currency: 'CNY' }, subject: 'bob' });
      assert.equal(forBob.status, 200, forBob.text);
      assert.equal(forBob.body.policyId, 'pwd-small');
      assert.deepEqual(forBob.body.satisfiable, [['password']]);
      assert.equal(forBob.body.user.id, bob.id);
      assert.deepEqual(forBob.body.user.enrolledFactorTypes, ['password']);
      assert.equal((await evaluate({ action: ACTION, context: { amount: '5000.00', currency: 'CNY' }, subject: bob.id })).body.enrollmentRequired, true);

      // A proposed set instead of the current one; the shadowed policy says who decided first.
      const proposed = await evaluate({
        action: ACTION,
        context: { amount: '10.00', currency: 'CNY', channel: 'app' },
        user: { enrolledFactorTypes: ['password'] },
        policies: [SET_A[0], { ...SET_A[1], id: 'app-only', priority: 30, when: { fields: { channel: { eq: 'app' } } } }, { ...SET_A[1], priority: 40 }],
      });
      assert.equal(proposed.status, 200, proposed.text);
      assert.equal(proposed.body.source, 'proposed');
      assert.equal(proposed.body.version, undefined);
      assert.equal(proposed.body.reasons.length, 3);
      assert.match(proposed.body.reasons[1].because[0], /^shadowed: pwd-small/);

      // The dry run refuses the amounts POST /v1/stepup refuses, with the same code and pointer.
      for (const [context, code, pointer] of [
        [{ amount: '10.001', currency: 'CNY' }, 'amount_precision_exceeded', '/context/amount'],
        [{ amount: '10', currency: 'CNY' }, 'amount_not_canonical', '/context/amount'],
        [{ amount: '10.00', currency: 'ZZZ' }, 'currency_unsupported', '/context/currency'],
      ] as const) {
        const refused = await evaluate({ action: ACTION, context, user: { enrolledFactorTypes: ['password'] } });
        assert.equal(refused.status, 400, refused.text);
        assert.equal(refused.body.code, code);
        assert.ok(param(refused.body, pointer) !== undefined, refused.text);
      }

      const deny = await evaluate({ action: 'account.close', context: {} });
      assert.equal(deny.body.decision, 'deny');
      assert.equal(deny.body.reason, 'no_matching_policy');
      assert.deepEqual(deny.body.reasons, []);

      const badCases: [object, string][] = [
        [{ action: ACTION, context: {}, policies: [{ ...SET_A[0], acr: 'urn:stepgate:aal2' }] }, '/policies/0/require/anyOf/0'],
        [{ action: ACTION, context: {}, subject: 'nobody' }, '/subject'],
        [{ action: ACTION, context: {}, subject: 'bob', user: {} }, '/user'],
        [{ action: ACTION, context: { amount: '1e3', currency: 'CNY' } }, '/context/amount'],
        [{ action: 'Not An Action', context: {} }, '/action'],
        [{ action: ACTION, context: {}, velocity: [{ windowSeconds: 0, count: 1 }] }, '/velocity/0/windowSeconds'],
      ];
      for (const [body, pointer] of badCases) {
        const res = await evaluate(body);
        assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.text}`);
        assert.ok(param(res.body, pointer) !== undefined, `${pointer} in ${res.text}`);
      }
      assert.deepEqual({ sets: await count('policy_sets'), stepups: await count('stepups'), audit: await count('audit_log') }, before);
    });

    it('velocity: figures come from completed step-ups; an unreadable stored amount fails closed instead of counting as zero', async () => {
      const policies = [
        { id: 'daily-allowance', action: ACTION, priority: 10, when: { amount: { lte: '1000.00', currency: 'CNY' }, velocity: { windowSeconds: 86400, maxCount: 10, maxAmount: '1000.00' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
        { ...SET_A[1], priority: 20 },
      ];
      await put(as.root!, '/v1/admin/policies', { policies }).expect(200);
      const carol = await makeUser(t.gw, 'carol');
      const pay = await makeClient(t.gw, 'velocity client', [ACTION]);
      const nowMs = t.clock.now().getTime();
      let n = 0;
      const completed = async (amount: string | null) => {
        n += 1;
        await t.gw.store.db
          .insertInto('stepups')
          .values({
            id: `stp_velocity_${dialect}_${n}`, client_id: pay.clientId, user_id: carol.id, action: ACTION, context: '{}', amount, currency: 'CNY',
            binding_message: null, redirect_uri: null, state: null, status: 'token_issued', policy_id: 'daily-allowance', policy_version: 1,
            requirement: '{"anyOf":[["password"]]}', acr: 'urn:stepgate:aal1', token_ttl_seconds: 120, max_age_seconds: 0, ticket_hash: `h${n}`,
            attempts: 1, max_attempts: 5, proven: '[]', amr: '[]', version: 1, created_at: nowMs - 60_000, expires_at: nowMs + 60_000,
            completed_at: nowMs - 30_000, auth_time: nowMs - 30_000, token_issued_at: null, token_jti: null, last_polled_at: null, poll_interval_seconds: 2,
          })
          .execute();
      };
      const evaluate = (amount: string) => post(as.root!, '/v1/admin/policies/evaluate', { action: ACTION, context: { amount, currency: 'CNY' }, subject: 'carol' });

      await completed('600.00');
      const within = await evaluate('300.00');
      assert.equal(within.body.policyId, 'daily-allowance', within.text);
      assert.deepEqual(within.body.velocity, [{ windowSeconds: 86400, count: 1, amountsByCurrency: { CNY: '600.00' } }]);
      const over = await evaluate('500.00');
      assert.equal(over.body.policyId, 'strict');
      assert.ok(over.body.reasons[0].because.some((b: string) => /^velocity: 600\.00 \+ 500\.00 = 1100\.00 CNY in 86400 s > maxAmount 1000\.00$/.test(b)), JSON.stringify(over.body.reasons[0]));
      // Assumed figures replace the real ones.
      const whatIf = await post(as.root!, '/v1/admin/policies/evaluate', { action: ACTION, context: { amount: '500.00', currency: 'CNY' }, subject: 'carol', velocity: [{ windowSeconds: 86400, count: 0, amountsByCurrency: { CNY: '0' } }] });
      assert.equal(whatIf.body.policyId, 'daily-allowance', whatIf.text);

      await completed('garbage');
      const facts = await velocityFacts(t.gw, policyDocumentSchema.parse({ policies }).policies, carol.id, ACTION);
      assert.deepEqual(facts, [{ windowSeconds: 86400, count: 2, amountsByCurrency: {} }], 'no CNY total rather than a wrong one');
      const closed = await evaluate('1.00');
      assert.equal(closed.body.policyId, 'strict', closed.text);
      assert.ok(closed.body.reasons[0].because.includes('velocity: no CNY total for the 86400 s window'), JSON.stringify(closed.body.reasons[0]));
    });

    it('end to end: a policy saved through the API changes what POST /v1/stepup requires', async () => {
      await makeUser(t.gw, 'dave');
      const pay = await makeClient(t.gw, 'payment-code service', [ACTION]);
      const create = () => t.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'dave', action: ACTION, context: { amount: '50.00', currency: 'CNY' } });

      const v1 = await put(as.root!, '/v1/admin/policies', { policies: SET_A }).expect(200);
      const first = await create();
      assert.equal(first.status, 201, first.text);
      assert.deepEqual(first.body.options, [['password']]);
      assert.equal(first.body.acr, 'urn:stepgate:aal1');
      const row = await t.gw.store.db.selectFrom('stepups').select(['policy_id', 'policy_version']).where('id', '=', first.body.stepup_id).executeTakeFirstOrThrow();
      assert.deepEqual({ ...row, policy_version: Number(row.policy_version) }, { policy_id: 'pwd-small', policy_version: v1.body.version });

      const raised = await put(as.root!, '/v1/admin/policies/pwd-small', { policy: { ...SET_A[0], require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' } });
      assert.equal(raised.status, 200, raised.text);
      const second = await create();
      assert.equal(second.status, 409, second.text);
      assert.equal(second.body.code, 'enrollment_required');

      await del(as.root!, '/v1/admin/policies/pwd-small').expect(200);
      await del(as.root!, '/v1/admin/policies/strict').expect(200);
      const third = await create();
      assert.equal(third.status, 403);
      assert.equal(third.body.code, 'access_denied');
    });
  });
}

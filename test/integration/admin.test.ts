import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type request from 'supertest';
import { createApp } from '../../src/app.ts';
import { createUser, type Role } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'a long enough passphrase 7';

/** Who may call which user/audit route (the clients routes belong to the clients router). */
const ACCESS: Record<string, Role[]> = {
  'get /v1/admin/users': ['admin', 'helpdesk', 'auditor'],
  'post /v1/admin/users': ['admin'],
  'get /v1/admin/users/:id': ['admin', 'helpdesk', 'auditor'],
  'post /v1/admin/users/:id/unlock': ['admin', 'helpdesk'],
  'post /v1/admin/users/:id/disable': ['admin', 'helpdesk'],
  'post /v1/admin/users/:id/enable': ['admin', 'helpdesk'],
  'post /v1/admin/users/:id/password-reset': ['admin', 'helpdesk'],
  'post /v1/admin/users/:id/factors/:factorId/remove': ['admin', 'helpdesk'],
  'post /v1/admin/users/:id/factors/reset': ['admin', 'helpdesk'],
  'get /v1/admin/audit': ['admin', 'auditor'],
  'post /v1/admin/audit/verify': ['admin', 'auditor'],
};

interface Session {
  agent: request.Agent;
  csrf: string;
  userId: string;
}

interface Problem {
  code: string;
  invalid_params?: { pointer: string }[];
}

function pointers(body: Problem): string[] {
  return (body.invalid_params ?? []).map((p) => p.pointer);
}

for (const dialect of testDialects()) {
  describe(`admin API (${dialect})`, () => {
    let t: TestGateway;
    const ids: Record<string, string> = {};
    const as: Record<string, Session> = {};

    async function signIn(username: string, password = PASSWORD): Promise<Session> {
      const agent = t.agent();
      const res = await agent.post('/v1/login').send({ username, password });
      assert.equal(res.status, 200, `${username}: ${JSON.stringify(res.body)}`);
      return { agent, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
    }

    function post(s: Session, path: string, body?: object) {
      const r = s.agent.post(path).set('X-CSRF-Token', s.csrf);
      return body === undefined ? r : r.send(body);
    }

    before(async () => {
      t = await createTestGateway({ dialect, config: { login: { maxFailures: 3, delayAfterFailures: 100 } } });
      const people: [string, Role[]][] = [
        ['root', ['admin']],
        ['second-admin', ['admin']],
        ['helpdesk', ['helpdesk']],
        ['auditor', ['auditor']],
        ['nobody', []],
        ['alice', []],
        ['bob', []],
      ];
      for (const [username, roles] of people) {
        const u = await createUser(t.gw, { username, password: PASSWORD, roles, groups: username === 'alice' ? ['tellers'] : [] }, { actor: 'test' });
        ids[username] = u.id;
      }
      for (const name of ['root', 'helpdesk', 'auditor', 'nobody']) as[name] = await signIn(name);
    });
    after(async () => {
      await t.close();
    });

    it('denies every /v1/admin route without a session or without a role (deny by default)', async () => {
      // All of them, including routes other routers add under the prefix.
      const routes = createApp(t.gw).api.routes.filter((r) => r.path.startsWith('/v1/admin'));
      for (const key of Object.keys(ACCESS)) assert.ok(routes.some((r) => `${r.method} ${r.path}` === key), `${key} is registered`);
      for (const r of routes) {
        const path = r.path.replace(':id', 'does_not_exist');
        const anon = await t.http()[r.method](path).send({});
        assert.equal(anon.status, 401, `anonymous ${r.method} ${r.path}`);
        assert.equal(anon.body.code, 'unauthorized');
        const s = as.nobody!;
        const res = await s.agent[r.method](path).set('X-CSRF-Token', s.csrf).send({});
        assert.equal(res.status, 403, `role-less user ${r.method} ${r.path}`);
        assert.equal(res.body.code, 'forbidden');
      }
      // Paths that match no route are still behind the session check.
      assert.equal((await t.http().get('/v1/admin/secrets')).status, 401);
      assert.equal((await t.http().post('/v1/admin/users/x/delete')).status, 401);
      assert.equal((await as.nobody!.agent.get('/v1/admin/secrets')).status, 404);
    });

    it('enforces the role matrix of the user and audit routes', async () => {
      for (const [key, allowedRoles] of Object.entries(ACCESS)) {
        const [method, route] = key.split(' ') as ['get' | 'post', string];
        const path = route.replace(':id', 'usr_does_not_exist');
        for (const who of ['root', 'helpdesk', 'auditor'] as const) {
          const s = as[who]!;
          const res = await s.agent[method](path).set('X-CSRF-Token', s.csrf).send({});
          const role: Role = who === 'root' ? 'admin' : who;
          if (allowedRoles.includes(role)) assert.ok(res.status !== 401 && res.status !== 403, `${who} ${key}: ${res.status} ${JSON.stringify(res.body)}`);
          else {
            assert.equal(res.status, 403, `${who} ${key}`);
            assert.equal(res.body.code, 'forbidden');
          }
        }
      }
    });

    it('documents the roles of each admin route in /openapi.json', async () => {
      const doc = (await t.http().get('/openapi.json')).body as { paths: Record<string, Record<string, { summary: string; security?: unknown[] }>> };
      const op = doc.paths['/v1/admin/users/{id}/unlock']?.post;
      assert.match(op?.summary ?? '', /Roles: admin, helpdesk\./);
      assert.deepEqual(op?.security, [{ session: [] }]);
    });

    it('lists and searches users with paging', async () => {
      const all = await as.auditor!.agent.get('/v1/admin/users?limit=200');
      assert.equal(all.status, 200);
      assert.ok(all.body.users.length >= 7);
      assert.equal(all.body.has_more, false);
      for (const u of all.body.users) assert.deepEqual(Object.keys(u).sort(), ['created_at', 'display_name', 'groups', 'id', 'roles', 'status', 'username']);

      const page1 = await as.auditor!.agent.get('/v1/admin/users?limit=2&offset=0');
      const page2 = await as.auditor!.agent.get('/v1/admin/users?limit=2&offset=2');
      assert.equal(page1.body.users.length, 2);
      assert.equal(page1.body.has_more, true);
      assert.notDeepEqual(page1.body.users.map((u: { id: string }) => u.id), page2.body.users.map((u: { id: string }) => u.id));

      const found = await as.helpdesk!.agent.get('/v1/admin/users?query=ALI');
      assert.deepEqual(found.body.users.map((u: { username: string }) => u.username), ['alice']);
      assert.deepEqual(found.body.users[0].groups, ['tellers']);
      const wildcard = await as.helpdesk!.agent.get('/v1/admin/users?query=%25');
      assert.equal(wildcard.body.users.length, 0, 'LIKE wildcards match literally');

      for (const [qs, pointer] of [
        ['limit=0', '/limit'],
        ['limit=201', '/limit'],
        ['limit=abc', '/limit'],
        ['limit=1e2', '/limit'],
        ['offset=-1', '/offset'],
        ['sort=username', '/sort'],
        ['limit=1&limit=2', '/limit'],
        [`query=${'x'.repeat(129)}`, '/query'],
      ] as const) {
        const res = await as.auditor!.agent.get(`/v1/admin/users?${qs}`);
        assert.equal(res.status, 400, qs);
        assert.equal(res.body.code, 'validation_failed');
        assert.ok(pointers(res.body).includes(pointer), `${qs}: ${JSON.stringify(res.body)}`);
      }
    });

    it('shows one user with factor metadata and never a secret', async () => {
      const res = await as.helpdesk!.agent.get(`/v1/admin/users/${ids.alice}`);
      assert.equal(res.status, 200);
      assert.equal(res.body.user.username, 'alice');
      assert.deepEqual(res.body.user.factors.map((f: { type: string }) => f.type), ['password']);
      assert.deepEqual(res.body.user.login, { failures: 0, locked_until: null });
      assert.ok(!/argon2|secret_hash|secret_sealed/.test(res.text));
      const missing = await as.helpdesk!.agent.get('/v1/admin/users/usr_nope');
      assert.equal(missing.status, 404);
      assert.equal(missing.body.code, 'not_found');
    });

    it('lets an admin create users with roles and groups', async () => {
      const res = await post(as.root!, '/v1/admin/users', { username: 'Carol', display_name: 'Carol C', password: PASSWORD, roles: ['helpdesk'], groups: ['ops', 'tellers'] });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.headers.location, `/v1/admin/users/${res.body.user.id}`);
      assert.equal(res.body.user.username, 'carol');
      assert.deepEqual(res.body.user.roles, ['helpdesk']);
      assert.deepEqual(res.body.user.groups, ['ops', 'tellers']);
      assert.ok(!res.text.includes(PASSWORD));
      const carol = await signIn('carol');
      assert.equal((await carol.agent.get('/v1/admin/users')).status, 200, 'the new helpdesk role works');

      const event = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'user.created').where('subject', '=', res.body.user.id).executeTakeFirstOrThrow();
      assert.equal(event.actor, ids.root);
      assert.ok(!event.data.includes(PASSWORD));

      const dup = await post(as.root!, '/v1/admin/users', { username: 'carol', password: PASSWORD });
      assert.equal(dup.status, 409);
      assert.equal(dup.body.code, 'conflict');
    });

    it('refuses bad user input with the field pointer and creates nothing', async () => {
      const before = (await t.gw.store.db.selectFrom('users').select('id').execute()).length;
      const cases: [unknown, string, string][] = [
        [{ username: 'dave', password: PASSWORD, roles: ['root'] }, 'validation_failed', '/roles/0'],
        [{ username: 'dave', password: PASSWORD, roles: 'admin' }, 'validation_failed', '/roles'],
        [{ username: 'dave', password: PASSWORD, isAdmin: true }, 'validation_failed', '/isAdmin'],
        [{ username: 'dave', password: PASSWORD, groups: [''] }, 'validation_failed', '/groups/0'],
        [{ username: 'dave', password: PASSWORD, groups: ['bad group!'] }, 'validation_failed', '/groups/0'],
        [{ username: 'dave' }, 'validation_failed', '/password'],
        // The pointer names the wire field, not the flow's property (B2): a control character
        // (refused by the input guard) and a C1 control and an overlong name (refused by the flow).
        [{ username: 'dave', password: PASSWORD, display_name: 'a\u0007' }, 'validation_failed', '/display_name'],
        [{ username: 'dave', password: PASSWORD, display_name: 'a\u0085b' }, 'validation_failed', '/display_name'],
        [{ username: 'dave', password: PASSWORD, display_name: 'x'.repeat(200) }, 'validation_failed', '/display_name'],
        [{ username: 42, password: PASSWORD }, 'validation_failed', '/username'],
        [{ username: 'da ve', password: PASSWORD }, 'validation_failed', '/username'],
        [{ username: 'dave', password: '1234567' }, 'password_policy', '/password'],
        [{ username: 'dave', password: 'password123' }, 'password_policy', '/password'],
        [[], 'validation_failed', ''],
      ];
      for (const [body, code, pointer] of cases) {
        const res = await post(as.root!, '/v1/admin/users', body as object);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.code, code, JSON.stringify(res.body));
        assert.ok(pointers(res.body).includes(pointer), `${JSON.stringify(body)} → ${JSON.stringify(res.body)}`);
      }
      const malformed = await as.root!.agent.post('/v1/admin/users').set('X-CSRF-Token', as.root!.csrf).set('Content-Type', 'application/json').send('{"username":');
      assert.equal(malformed.status, 400);
      assert.equal(malformed.body.code, 'invalid_json');
      const huge = await post(as.root!, '/v1/admin/users', { username: 'dave', password: PASSWORD, display_name: 'x'.repeat(100_000) });
      assert.equal(huge.status, 413);
      assert.equal((await t.gw.store.db.selectFrom('users').select('id').execute()).length, before);
    });

    it('requires the CSRF token on every state change of a cookie session', async () => {
      const noToken = await as.root!.agent.post(`/v1/admin/users/${ids.bob}/disable`).send({ reason: 'csrf test' });
      assert.equal(noToken.status, 403);
      assert.equal(noToken.body.code, 'csrf_failed');
      const wrong = await as.root!.agent.post(`/v1/admin/users/${ids.bob}/disable`).set('X-CSRF-Token', as.helpdesk!.csrf).send({ reason: 'csrf test' });
      assert.equal(wrong.status, 403);
      const bob = await as.root!.agent.get(`/v1/admin/users/${ids.bob}`);
      assert.equal(bob.body.user.status, 'active');
    });

    it('lets helpdesk unlock a locked login, recording who and why', async () => {
      for (let i = 0; i < 3; i += 1) {
        const bad = await t.http().post('/v1/login').send({ username: 'bob', password: 'wrong password!' });
        assert.equal(bad.status, 401);
      }
      const locked = await t.http().post('/v1/login').send({ username: 'bob', password: PASSWORD });
      assert.notEqual(locked.status, 200);
      const detail = await as.helpdesk!.agent.get(`/v1/admin/users/${ids.bob}`);
      assert.ok(detail.body.user.login.failures >= 3);
      assert.notEqual(detail.body.user.login.locked_until, null);

      for (const [body, pointer] of [[{}, '/reason'], [{ reason: '  ' }, '/reason'], [{ reason: 'ok', why: 'x' }, '/why'], [{ reason: 7 }, '/reason']] as const) {
        const res = await post(as.helpdesk!, `/v1/admin/users/${ids.bob}/unlock`, body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.ok(pointers(res.body).includes(pointer), JSON.stringify(res.body));
      }
      const stillLocked = await t.http().post('/v1/login').send({ username: 'bob', password: PASSWORD });
      assert.notEqual(stillLocked.status, 200, 'a refused unlock changed nothing');

      const res = await post(as.helpdesk!, `/v1/admin/users/${ids.bob}/unlock`, { reason: 'ticket #4711, identity checked by phone' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.user.login, { failures: 0, locked_until: null });
      assert.equal((await t.http().post('/v1/login').send({ username: 'bob', password: PASSWORD })).status, 200);

      const event = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'login.unlocked').where('subject', '=', ids.bob!).executeTakeFirstOrThrow();
      assert.equal(event.actor, ids.helpdesk);
      assert.equal(JSON.parse(event.data).reason, 'ticket #4711, identity checked by phone');
      assert.ok(event.request_id !== null);
    });

    it('disables (ending sessions) and re-enables an account', async () => {
      const alice = await signIn('alice');
      assert.equal((await alice.agent.get('/v1/me')).status, 200);
      const res = await post(as.helpdesk!, `/v1/admin/users/${ids.alice}/disable`, { reason: 'left the company' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.user.status, 'disabled');
      assert.equal((await alice.agent.get('/v1/me')).status, 401, 'her session ended');
      assert.notEqual((await t.http().post('/v1/login').send({ username: 'alice', password: PASSWORD })).status, 200);

      const enabled = await post(as.helpdesk!, `/v1/admin/users/${ids.alice}/enable`, { reason: 'came back' });
      assert.equal(enabled.body.user.status, 'active');
      assert.equal((await t.http().post('/v1/login').send({ username: 'alice', password: PASSWORD })).status, 200);

      const events = await t.gw.store.db.selectFrom('audit_log').selectAll().where('subject', '=', ids.alice!).where('type', 'in', ['user.disabled', 'user.enabled']).orderBy('seq').execute();
      assert.deepEqual(events.map((e) => [e.type, e.actor, JSON.parse(e.data).reason]), [
        ['user.disabled', ids.helpdesk, 'left the company'],
        ['user.enabled', ids.helpdesk, 'came back'],
      ]);
      const missing = await post(as.helpdesk!, '/v1/admin/users/usr_nope/disable', { reason: 'no such user' });
      assert.equal(missing.status, 404);
    });

    it('keeps helpdesk away from administrators and nobody disables themselves', async () => {
      for (const action of ['disable', 'enable', 'unlock']) {
        const res = await post(as.helpdesk!, `/v1/admin/users/${ids['second-admin']}/${action}`, { reason: 'trying my luck' });
        assert.equal(res.status, 403, action);
        assert.equal(res.body.code, 'forbidden');
      }
      const self = await post(as.root!, `/v1/admin/users/${ids.root}/disable`, { reason: 'oops' });
      assert.equal(self.status, 409);
      assert.equal(self.body.code, 'conflict');
      const adminOnAdmin = await post(as.root!, `/v1/admin/users/${ids['second-admin']}/unlock`, { reason: 'admin may' });
      assert.equal(adminOnAdmin.status, 200);
      const statuses = await t.gw.store.db.selectFrom('users').select('status').where('id', 'in', [ids.root!, ids['second-admin']!]).execute();
      assert.ok(statuses.every((s) => s.status === 'active'));
    });

    it('reads the audit log with filters and paging, without secrets', async () => {
      await post(as.helpdesk!, `/v1/admin/users/${ids.bob}/unlock`, { reason: 'audit read test' });
      await post(as.helpdesk!, `/v1/admin/users/${ids.bob}/disable`, { reason: 'audit read test' });
      await post(as.helpdesk!, `/v1/admin/users/${ids.bob}/enable`, { reason: 'audit read test' });
      const all = await as.auditor!.agent.get('/v1/admin/audit?limit=500');
      assert.equal(all.status, 200);
      const seqs = all.body.events.map((e: { seq: number }) => e.seq);
      assert.deepEqual(seqs, [...seqs].sort((a: number, b: number) => b - a), 'newest first');
      assert.ok(!all.text.includes(PASSWORD), 'no password in the audit log');
      assert.ok(!all.text.includes(as.root!.csrf), 'no session secret in the audit log');
      assert.ok(!/\$argon2/.test(all.text));

      const created = await as.auditor!.agent.get('/v1/admin/audit?type=user.created');
      assert.ok(created.body.events.length >= 7);
      assert.ok(created.body.events.every((e: { type: string }) => e.type === 'user.created'));
      const users = await as.auditor!.agent.get('/v1/admin/audit?type=user.*');
      assert.ok(users.body.events.some((e: { type: string }) => e.type === 'user.disabled'));
      assert.ok(users.body.events.every((e: { type: string }) => e.type.startsWith('user.')));
      const aboutBob = await as.auditor!.agent.get(`/v1/admin/audit?subject=${ids.bob}`);
      assert.ok(aboutBob.body.events.length > 0 && aboutBob.body.events.every((e: { subject: string }) => e.subject === ids.bob));
      const byHelpdesk = await as.auditor!.agent.get(`/v1/admin/audit?actor=${ids.helpdesk}&type=login.unlocked&subject=${ids.bob}`);
      assert.ok(byHelpdesk.body.events.length >= 1);
      assert.equal(byHelpdesk.body.events[0].data.reason, 'audit read test');
      assert.equal(byHelpdesk.body.events[0].actor, ids.helpdesk);

      const future = new Date(t.clock.now().getTime() + 60_000).toISOString();
      assert.equal((await as.auditor!.agent.get(`/v1/admin/audit?since=${future}`)).body.events.length, 0);
      const past = new Date(t.clock.now().getTime() - 60_000).toISOString();
      assert.equal((await as.auditor!.agent.get(`/v1/admin/audit?since=${encodeURIComponent(past)}&limit=500`)).body.events.length, all.body.events.length);

      const p1 = await as.auditor!.agent.get('/v1/admin/audit?limit=3');
      const p2 = await as.auditor!.agent.get('/v1/admin/audit?limit=3&offset=3');
      assert.equal(p1.body.has_more, true);
      assert.equal(p2.body.events[0].seq, p1.body.events[2].seq - 1);

      for (const [qs, pointer] of [['type=user.%25', '/type'], ['type=User.Created', '/type'], ['since=yesterday', '/since'], ['limit=501', '/limit'], ['verbose=1', '/verbose']] as const) {
        const res = await as.auditor!.agent.get(`/v1/admin/audit?${qs}`);
        assert.equal(res.status, 400, qs);
        assert.ok(pointers(res.body).includes(pointer), `${qs}: ${JSON.stringify(res.body)}`);
      }
    });

    it('redacts secret-named keys should an event ever carry one', async () => {
      await t.gw.audit.append(t.gw.store.db, { type: 'test.leaky', data: { password: 'hunter2hunter2', nested: { token: 'abc', keep: 1 } } });
      const res = await as.auditor!.agent.get('/v1/admin/audit?type=test.leaky');
      assert.deepEqual(res.body.events[0].data, { password: '[redacted]', nested: { token: '[redacted]', keep: 1 } });
    });

    it('verifies the chain on request and names a broken row', async () => {
      const ok = await post(as.auditor!, '/v1/admin/audit/verify');
      assert.equal(ok.status, 200);
      assert.equal(ok.body.ok, true);
      assert.ok(ok.body.rows > 10);
      const head = await t.gw.store.db.selectFrom('audit_log').select('seq').orderBy('seq', 'desc').executeTakeFirstOrThrow();
      const verified = await t.gw.store.db.selectFrom('audit_log').selectAll().where('seq', '=', head.seq).executeTakeFirstOrThrow();
      assert.equal(verified.type, 'audit.verified');
      assert.equal(verified.actor, ids.auditor);

      const original = await t.gw.store.db.selectFrom('audit_log').select('data').where('seq', '=', 3).executeTakeFirstOrThrow();
      await t.gw.store.db.updateTable('audit_log').set({ data: '{"reason":"rewritten"}' }).where('seq', '=', 3).execute();
      try {
        const broken = await post(as.root!, '/v1/admin/audit/verify');
        assert.equal(broken.status, 200);
        assert.deepEqual({ ok: broken.body.ok, broken_seq: broken.body.broken_seq, reason: broken.body.reason }, { ok: false, broken_seq: 3, reason: 'hash_mismatch' });
      } finally {
        await t.gw.store.db.updateTable('audit_log').set({ data: original.data }).where('seq', '=', 3).execute();
      }
      assert.equal((await post(as.auditor!, '/v1/admin/audit/verify')).body.ok, true);
    });
  });
}

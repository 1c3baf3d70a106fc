import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { getClient, listClients, redirectUriProblem } from '../../src/flows/clients.ts';
import { createSession } from '../../src/flows/sessions.ts';
import { createUser } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

interface Session {
  cookie: string;
  csrf: string;
  userId: string;
}

for (const dialect of testDialects()) {
  describe(`clients admin API (${dialect})`, () => {
    let t: TestGateway;
    let admin: Session;
    let auditor: Session;
    let helpdesk: Session;
    let publicJwk: JWK;
    let privateJwk: JWK;

    async function session(username: string, roles: ('admin' | 'auditor' | 'helpdesk')[]): Promise<Session> {
      const user = await createUser(t.gw, { username, password: `pw-${randomBytes(12).toString('base64url')}`, roles }, { actor: 'test' });
      const s = await createSession(t.gw, user.id, ['pwd']);
      return { cookie: `stepgate_session=${s.sessionId}`, csrf: s.csrfToken, userId: user.id };
    }

    function as(s: Session, method: 'get' | 'post' | 'put', path: string) {
      const req = t.http()[method](path).set('Cookie', s.cookie);
      return method === 'get' ? req : req.set('X-CSRF-Token', s.csrf);
    }

    async function auditCount(): Promise<number> {
      const row = await t.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    }

    before(async () => {
      t = await createTestGateway({ dialect });
      [admin, auditor, helpdesk] = [await session('ada', ['admin']), await session('audrey', ['auditor']), await session('hal', ['helpdesk'])];
      const pair = await generateKeyPair('ES256', { extractable: true });
      publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1' };
      privateJwk = { ...(await exportJWK(pair.privateKey)), kid: 'k1' };
    });
    after(async () => {
      await t.close();
    });

    it('creates a client_secret_basic client and shows the secret exactly once', async () => {
      const res = await as(admin, 'post', '/v1/admin/clients').send({
        name: 'Payment codes',
        allowed_actions: ['payment_code.issue', 'payment_code.offline_seed'],
        redirect_uris: ['https://pay.example/return', 'http://localhost:3000/cb'],
      });
      assert.equal(res.status, 201, res.text);
      assert.match(res.body.client_id, /^cli_[A-Za-z0-9_-]{22}$/);
      assert.equal(res.body.auth_method, 'client_secret_basic');
      assert.equal(res.body.status, 'active');
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.headers.location, `/v1/admin/clients/${res.body.client_id}`);
      const secret = res.body.client_secret as string;
      assert.ok(Buffer.from(secret, 'base64url').length >= 32, 'a 256-bit secret');

      const read = await as(admin, 'get', `/v1/admin/clients/${res.body.client_id}`);
      assert.equal(read.status, 200);
      assert.equal(read.body.client_secret, undefined);
      assert.equal(read.body.secret_hash, undefined);
      assert.deepEqual(read.body.allowed_actions, ['payment_code.issue', 'payment_code.offline_seed']);
      assert.deepEqual(read.body.redirect_uris, ['https://pay.example/return', 'http://localhost:3000/cb']);

      // The secret works, and it is nowhere at rest: not in the row, the audit log or the logs.
      const me = await t.http().get('/v1/clients/me').set('Authorization', basic(res.body.client_id, secret));
      assert.equal(me.status, 200);
      const row = await t.gw.store.db.selectFrom('clients').selectAll().where('client_id', '=', res.body.client_id).executeTakeFirstOrThrow();
      assert.ok(row.secret_hash !== null && row.secret_hash !== secret);
      assert.ok(!JSON.stringify(row).includes(secret));
      const audit = await t.gw.store.db.selectFrom('audit_log').selectAll().execute();
      assert.ok(!JSON.stringify(audit).includes(secret));
      assert.ok(!t.logs.text.includes(secret));
      const created = audit.find((a) => a.type === 'client.created' && a.subject === res.body.client_id);
      assert.ok(created !== undefined, 'client.created audited');
      assert.equal(created.actor, admin.userId);
    });

    it('lets auditors read but not change, and refuses everyone else', async () => {
      const list = await as(auditor, 'get', '/v1/admin/clients');
      assert.equal(list.status, 200);
      assert.ok(Array.isArray(list.body.clients) && list.body.clients.length >= 1);
      for (const c of list.body.clients) assert.equal(c.client_secret, undefined);
      const one = list.body.clients[0].client_id as string;
      assert.equal((await as(auditor, 'get', `/v1/admin/clients/${one}`)).status, 200);

      const before = await listClients(t.gw);
      const audits = await auditCount();
      const attempts = [
        as(auditor, 'post', '/v1/admin/clients').send({ name: 'x', allowed_actions: ['a.b'] }),
        as(auditor, 'post', `/v1/admin/clients/${one}/rotate-secret`),
        as(auditor, 'post', `/v1/admin/clients/${one}/disable`),
        as(auditor, 'put', `/v1/admin/clients/${one}/jwks`).send({ keys: [publicJwk] }),
        as(helpdesk, 'get', '/v1/admin/clients'),
        as(helpdesk, 'post', '/v1/admin/clients').send({ name: 'x', allowed_actions: ['a.b'] }),
      ];
      for (const res of await Promise.all(attempts)) {
        assert.equal(res.status, 403, res.text);
        assert.equal(res.body.code, 'forbidden');
      }
      for (const res of [await t.http().get('/v1/admin/clients'), await t.http().post('/v1/admin/clients').send({ name: 'x', allowed_actions: ['a.b'] })]) {
        assert.equal(res.status, 401);
        assert.equal(res.body.code, 'unauthorized');
      }
      // A relying client's credentials are not an admin session.
      assert.equal((await t.http().get('/v1/admin/clients').set('Authorization', basic(one, 'whatever'))).status, 401);
      assert.deepEqual(await listClients(t.gw), before);
      assert.equal(await auditCount(), audits);
    });

    it('requires the CSRF token on changes', async () => {
      const res = await t.http().post('/v1/admin/clients').set('Cookie', admin.cookie).send({ name: 'x', allowed_actions: ['a.b'] });
      assert.equal(res.status, 403);
      assert.equal(res.body.code, 'csrf_failed');
    });

    it('rejects bad input with pointers and changes nothing', async () => {
      const before = await listClients(t.gw);
      const audits = await auditCount();
      const cases: [Record<string, unknown>, string][] = [
        [{ name: 'x', allowed_actions: ['a.b'], extra: 1 }, '/extra'],
        [{ name: '', allowed_actions: ['a.b'] }, '/name'],
        [{ name: '   ', allowed_actions: ['a.b'] }, '/name'],
        [{ name: 'bell\u0007', allowed_actions: ['a.b'] }, '/name'],
        [{ name: 'x', allowed_actions: [] }, '/allowed_actions'],
        [{ name: 'x', allowed_actions: ['ok.one', 'Not Valid'] }, '/allowed_actions/1'],
        [{ name: 'x', allowed_actions: 'a.b' }, '/allowed_actions'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['http://pay.example/cb'] }, '/redirect_uris/0'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['https://ok.example/cb', 'https://pay.example/cb#frag'] }, '/redirect_uris/1'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['https://*.example/cb'] }, '/redirect_uris/0'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['https://user:pw@pay.example/cb'] }, '/redirect_uris/0'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['/relative'] }, '/redirect_uris/0'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['https://pay.example'] }, '/redirect_uris/0'],
        [{ name: 'x', allowed_actions: ['a.b'], redirect_uris: ['https://PAY.example/cb'] }, '/redirect_uris/0'],
        [{ name: 'x', allowed_actions: ['a.b'], auth_method: 'client_secret_post' }, '/auth_method'],
        [{ name: 'x', allowed_actions: ['a.b'], auth_method: 'private_key_jwt' }, '/jwks'],
        [{ name: 'x', allowed_actions: ['a.b'], jwks: { keys: [publicJwk] } }, '/jwks'],
      ];
      for (const [body, pointer] of cases) {
        const res = await as(admin, 'post', '/v1/admin/clients').send(body);
        assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.text}`);
        assert.equal(res.body.code, 'validation_failed');
        const pointers = (res.body.invalid_params as { pointer: string }[]).map((p) => p.pointer);
        assert.ok(pointers.includes(pointer), `${JSON.stringify(body)}: expected ${pointer} in ${pointers.join(', ')}`);
      }
      assert.deepEqual(await listClients(t.gw), before);
      assert.equal(await auditCount(), audits);
    });

    it('accepts http://localhost redirect URIs only in development mode', () => {
      assert.equal(redirectUriProblem('http://localhost:3000/cb', 'development'), undefined);
      assert.equal(redirectUriProblem('http://127.0.0.1/cb', 'development'), undefined);
      assert.ok(redirectUriProblem('http://localhost:3000/cb', 'production') !== undefined);
      assert.ok(redirectUriProblem('http://127.0.0.1/cb', 'production') !== undefined);
      assert.ok(redirectUriProblem('http://localhost.evil.example/cb', 'development') !== undefined);
      assert.equal(redirectUriProblem('https://pay.example/cb?x=1', 'production'), undefined);
    });

    it('registers a private_key_jwt client with public keys only', async () => {
      const res = await as(admin, 'post', '/v1/admin/clients').send({ name: 'Signed', allowed_actions: ['payment_code.issue'], auth_method: 'private_key_jwt', jwks: { keys: [{ ...publicJwk, use: 'sig', alg: 'ES256', x5c: ['junk'] }] } });
      assert.equal(res.status, 201, res.text);
      assert.equal(res.body.client_secret, undefined);
      assert.equal(res.body.auth_method, 'private_key_jwt');
      assert.deepEqual(res.body.jwks, { keys: [{ kty: 'EC', kid: 'k1', use: 'sig', alg: 'ES256', crv: 'P-256', x: publicJwk.x, y: publicJwk.y }] });
    });

    it('refuses private keys, symmetric keys and unusable keys in a JWKS', async () => {
      const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
      const p384 = await generateKeyPair('ES384', { extractable: true });
      const rsa = await generateKeyPair('PS256', { extractable: true });
      const rsaPublic = await exportJWK(rsa.publicKey);
      const before = await listClients(t.gw);
      const cases: [unknown, string][] = [
        [{ keys: [privateJwk] }, '/jwks/keys/0/d'],
        [{ keys: [{ ...(await exportJWK(rsa.privateKey)), kid: 'r' }] }, '/jwks/keys/0/d'],
        [{ keys: [{ ...publicJwk, p: 'AQAB' }] }, '/jwks/keys/0/p'],
        [{ keys: [{ kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQ', kid: 'h' }] }, '/jwks/keys/0/kty'],
        [{ keys: [rsa1024.publicKey.export({ format: 'jwk' })] }, '/jwks/keys/0/n'],
        [{ keys: [{ ...(await exportJWK(p384.publicKey)) }] }, '/jwks/keys/0/crv'],
        [{ keys: [{ ...rsaPublic, alg: 'RS256' }] }, '/jwks/keys/0/alg'],
        [{ keys: [{ ...publicJwk, use: 'enc' }] }, '/jwks/keys/0/use'],
        [{ keys: [{ ...publicJwk, x: 'AAAA' }] }, '/jwks/keys/0'],
        [{ keys: [publicJwk, { ...rsaPublic, kid: 'k1' }] }, '/jwks/keys/1/kid'],
        [{ keys: [{ ...publicJwk, kid: undefined }, rsaPublic] }, '/jwks/keys/0/kid'],
        [{ keys: [] }, '/jwks/keys'],
        [{ keys: [{ kty: 'XYZ' }] }, '/jwks/keys/0/kty'],
      ];
      for (const [jwks, pointer] of cases) {
        const res = await as(admin, 'post', '/v1/admin/clients').send({ name: 'Bad keys', allowed_actions: ['a.b'], auth_method: 'private_key_jwt', jwks });
        assert.equal(res.status, 400, `${pointer}: ${res.text}`);
        assert.equal(res.body.code, 'validation_failed');
        const pointers = (res.body.invalid_params as { pointer: string }[]).map((p) => p.pointer);
        assert.ok(pointers.includes(pointer), `expected ${pointer} in ${pointers.join(', ')}`);
      }
      assert.deepEqual(await listClients(t.gw), before);
      assert.ok(!t.logs.text.includes(privateJwk.d as string), 'the leaked private key is not logged');
    });

    it('replaces a JWKS, refusing private keys there too', async () => {
      const created = await as(admin, 'post', '/v1/admin/clients').send({ name: 'Rotating keys', allowed_actions: ['a.b'], auth_method: 'private_key_jwt', jwks: { keys: [publicJwk] } });
      const id = created.body.client_id as string;
      const other = await generateKeyPair('EdDSA', { extractable: true });
      const otherJwk = { ...(await exportJWK(other.publicKey)), kid: 'k2' };

      const bad = await as(admin, 'put', `/v1/admin/clients/${id}/jwks`).send({ keys: [privateJwk] });
      assert.equal(bad.status, 400);
      assert.ok((bad.body.invalid_params as { pointer: string }[]).some((p) => p.pointer === '/keys/0/d'));
      assert.equal((await as(admin, 'put', `/v1/admin/clients/${id}/jwks`).send({ keys: [publicJwk], extra: true })).status, 400);
      assert.deepEqual((await getClient(t.gw, id)).jwks?.keys.map((k) => k.kid), ['k1']);

      const res = await as(admin, 'put', `/v1/admin/clients/${id}/jwks`).send({ keys: [publicJwk, otherJwk] });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual((res.body.jwks.keys as JWK[]).map((k) => k.kid), ['k1', 'k2']);

      // A client_secret_basic client has no JWKS to replace; an unknown one is 404.
      const basicClient = (await listClients(t.gw)).find((c) => c.authMethod === 'client_secret_basic');
      assert.ok(basicClient !== undefined);
      assert.equal((await as(admin, 'put', `/v1/admin/clients/${basicClient.clientId}/jwks`).send({ keys: [publicJwk] })).status, 409);
      assert.equal((await as(admin, 'put', '/v1/admin/clients/cli_nope/jwks').send({ keys: [publicJwk] })).status, 404);
    });

    it('rotates a secret: the new one works, the old one stops at once', async () => {
      const created = await as(admin, 'post', '/v1/admin/clients').send({ name: 'Rotate me', allowed_actions: ['a.b'] });
      const id = created.body.client_id as string;
      const res = await as(admin, 'post', `/v1/admin/clients/${id}/rotate-secret`);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.ok(typeof res.body.client_secret === 'string' && res.body.client_secret !== created.body.client_secret);
      assert.ok(res.body.secret_rotated_at !== null);
      assert.equal((await t.http().get('/v1/clients/me').set('Authorization', basic(id, created.body.client_secret))).status, 401);
      assert.equal((await t.http().get('/v1/clients/me').set('Authorization', basic(id, res.body.client_secret))).status, 200);

      const jwtClient = (await listClients(t.gw)).find((c) => c.authMethod === 'private_key_jwt');
      assert.ok(jwtClient !== undefined);
      assert.equal((await as(admin, 'post', `/v1/admin/clients/${jwtClient.clientId}/rotate-secret`)).status, 409);
      assert.equal((await as(admin, 'post', '/v1/admin/clients/cli_nope/rotate-secret')).status, 404);
    });

    it('disables a client (idempotently), after which it cannot authenticate or rotate', async () => {
      const created = await as(admin, 'post', '/v1/admin/clients').send({ name: 'Disable me', allowed_actions: ['a.b'] });
      const id = created.body.client_id as string;
      const res = await as(admin, 'post', `/v1/admin/clients/${id}/disable`);
      assert.equal(res.status, 200);
      assert.equal(res.body.status, 'disabled');
      const again = await as(admin, 'post', `/v1/admin/clients/${id}/disable`);
      assert.equal(again.status, 200);
      assert.equal(again.body.status, 'disabled');
      assert.equal((await t.http().get('/v1/clients/me').set('Authorization', basic(id, created.body.client_secret))).status, 401);
      assert.equal((await as(admin, 'post', `/v1/admin/clients/${id}/rotate-secret`)).status, 409);
      assert.equal((await as(admin, 'post', '/v1/admin/clients/cli_nope/disable')).status, 404);
      assert.equal((await as(admin, 'get', '/v1/admin/clients/cli_nope')).status, 404);

      const events = await t.gw.store.db.selectFrom('audit_log').select(['type']).where('subject', '=', id).orderBy('seq').execute();
      assert.deepEqual(
        events.map((e) => e.type),
        ['client.created', 'client.disabled'],
      );
    });

    it('audits every change in one unbroken chain', async () => {
      const types = new Set((await t.gw.store.db.selectFrom('audit_log').select('type').execute()).map((r) => r.type));
      for (const type of ['client.created', 'client.secret_rotated', 'client.jwks_updated', 'client.disabled']) assert.ok(types.has(type), type);
      const chain = await verifyAuditChain(t.gw.store.db);
      assert.equal(chain.ok, true);
    });

    it('documents the routes in /openapi.json', async () => {
      const res = await t.http().get('/openapi.json');
      const paths = res.body.paths as Record<string, Record<string, unknown>>;
      assert.ok(paths['/v1/admin/clients']?.get && paths['/v1/admin/clients']?.post);
      assert.ok(paths['/v1/admin/clients/{id}/rotate-secret']?.post);
      assert.ok(paths['/v1/admin/clients/{id}/jwks']?.put);
      assert.ok(paths['/v1/clients/me']?.get && paths['/v1/clients/me']?.post);
    });
  });
}

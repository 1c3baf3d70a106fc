import assert from 'node:assert/strict';
import { createHmac, KeyObject, randomUUID, sign as cryptoSign } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type CryptoKey, exportJWK, exportPKCS8, generateKeyPair, importPKCS8, type JWK, type JWTPayload, SignJWT } from 'jose';
import type { Response } from 'supertest';
import { ASSERTION_CLOCK_SKEW_SECONDS, ASSERTION_JTI_PRUNE_GRACE_SECONDS, createClient, disableClient, rotateClientSecret, setClientJwks } from '../../src/flows/clients.ts';
import { parseBasicCredentials } from '../../src/http/client-auth.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const CLI = { actor: 'test' };

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`, 'utf8').toString('base64')}`;
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

/** The one failure shape: 401 invalid_client, Basic challenge, nothing that tells the cases apart. */
function assertInvalidClient(res: Response, expectedBody?: unknown): unknown {
  assert.equal(res.status, 401, `expected 401, got ${res.status} ${res.text}`);
  assert.equal(res.body.code, 'invalid_client');
  assert.equal(res.headers['www-authenticate'], 'Basic realm="stepgate"');
  const { request_id: _ignored, ...body } = res.body as Record<string, unknown>;
  if (expectedBody !== undefined) assert.deepEqual(body, expectedBody);
  return body;
}

interface KeyPair {
  privateKey: CryptoKey;
  publicJwk: JWK;
  alg: 'ES256' | 'EdDSA' | 'PS256' | 'RS256';
  kid: string;
}

async function keyPair(alg: 'ES256' | 'EdDSA' | 'PS256' | 'RS256', kid: string): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid };
  return { privateKey, publicJwk, alg, kid };
}

for (const dialect of testDialects()) {
  describe(`client authentication (${dialect})`, () => {
    let t: TestGateway;
    let basicClient: { id: string; secret: string };
    let es: KeyPair;
    let ed: KeyPair;
    let ps: KeyPair;
    let stranger: KeyPair;
    let jwtClientId: string;
    let otherJwtClientId: string;
    let tokenAud: string;
    let issuerAud: string;

    before(async () => {
      t = await createTestGateway({ dialect });
      const base = t.config.http.publicUrl.replace(/\/+$/, '');
      tokenAud = `${base}/v1/stepup/token`;
      issuerAud = base;
      const created = await createClient(t.gw, { name: 'Payment codes', actions: ['payment_code.issue'], redirectUris: ['https://pay.example/cb'] }, CLI);
      basicClient = { id: created.client.clientId, secret: created.clientSecret as string };
      [es, ed, ps, stranger] = await Promise.all([keyPair('ES256', 'es-1'), keyPair('EdDSA', 'ed-1'), keyPair('PS256', 'ps-1'), keyPair('ES256', 'es-1')]);
      const jwt = await createClient(
        t.gw,
        { name: 'Signed client', actions: ['payment_code.issue', 'payment_code.offline_seed'], authMethod: 'private_key_jwt', jwks: { keys: [es.publicJwk, ed.publicJwk, ps.publicJwk] } },
        CLI,
      );
      jwtClientId = jwt.client.clientId;
      const other = await createClient(t.gw, { name: 'Other', actions: ['payment_code.issue'], authMethod: 'private_key_jwt', jwks: { keys: [stranger.publicJwk] } }, CLI);
      otherJwtClientId = other.client.clientId;
    });
    after(async () => {
      await t.close();
    });

    function nowSeconds(): number {
      return Math.floor(t.clock.now().getTime() / 1000);
    }

    function claims(overrides: Record<string, unknown> = {}): JWTPayload {
      const now = nowSeconds();
      return { iss: jwtClientId, sub: jwtClientId, aud: tokenAud, iat: now, exp: now + 30, jti: randomUUID(), ...overrides } as JWTPayload;
    }

    async function sign(key: KeyPair, payload: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
      return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).sign(key.privateKey);
    }

    function presentAssertion(assertion: string, extra: Record<string, unknown> = {}) {
      return t.http().post('/v1/clients/me').send({ client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, ...extra });
    }

    describe('client_secret_basic', () => {
      it('accepts the right secret and exposes the client to the route', async () => {
        const res = await t.http().get('/v1/clients/me').set('Authorization', basic(basicClient.id, basicClient.secret));
        assert.equal(res.status, 200, res.text);
        assert.equal(res.body.client_id, basicClient.id);
        assert.equal(res.body.auth_method, 'client_secret_basic');
        assert.deepEqual(res.body.allowed_actions, ['payment_code.issue']);
        assert.deepEqual(res.body.redirect_uris, ['https://pay.example/cb']);
      });

      it('accepts the credentials without form-encoding too (nothing to encode in our ids and secrets) and a lower-case scheme', async () => {
        const raw = Buffer.from(`${basicClient.id}:${basicClient.secret}`).toString('base64');
        const res = await t.http().get('/v1/clients/me').set('Authorization', `basic ${raw}`);
        assert.equal(res.status, 200, res.text);
      });

      it('gives unknown client, wrong secret, disabled client and no credentials the same 401', async () => {
        const wrong = await t.http().get('/v1/clients/me').set('Authorization', basic(basicClient.id, `${basicClient.secret.slice(0, -1)}x`));
        const reference = assertInvalidClient(wrong);
        assertInvalidClient(await t.http().get('/v1/clients/me').set('Authorization', basic('cli_doesNotExist00000000', basicClient.secret)), reference);
        assertInvalidClient(await t.http().get('/v1/clients/me'), reference);
        const disabled = await createClient(t.gw, { name: 'Soon disabled', actions: ['payment_code.issue'] }, CLI);
        const ok = await t.http().get('/v1/clients/me').set('Authorization', basic(disabled.client.clientId, disabled.clientSecret as string));
        assert.equal(ok.status, 200);
        await disableClient(t.gw, disabled.client.clientId, CLI);
        assertInvalidClient(await t.http().get('/v1/clients/me').set('Authorization', basic(disabled.client.clientId, disabled.clientSecret as string)), reference);
      });

      it('never answers a malformed Authorization header with anything but the same 401', async () => {
        const reference = assertInvalidClient(await t.http().get('/v1/clients/me').set('Authorization', basic(basicClient.id, 'nope')));
        const headers = [
          'Basic',
          'Basic ',
          'Basic !!!!',
          'Basic ====',
          `Basic ${Buffer.from('no-colon-here').toString('base64')}`,
          `Basic ${Buffer.from(`:${basicClient.secret}`).toString('base64')}`,
          `Basic ${Buffer.from(`${basicClient.id}:`).toString('base64')}`,
          `Basic ${Buffer.from(`${basicClient.id}:%ZZ`).toString('base64')}`,
          `Basic ${Buffer.from(`%E0%A4%A:${basicClient.secret}`).toString('base64')}`,
          `Basic ${Buffer.from([0xff, 0xfe, 0x3a, 0x00, 0xc3]).toString('base64')}`,
          // Control characters, raw or form-encoded: no lookup (NUL would break it on PostgreSQL).
          `Basic ${Buffer.from(`a\u0000b:${basicClient.secret}`).toString('base64')}`,
          `Basic ${Buffer.from(`a%00b:${basicClient.secret}`).toString('base64')}`,
          `Basic ${Buffer.from(`${basicClient.id}:se\u0007cret`).toString('base64')}`,
          `Basic ${'A'.repeat(12_000)}`,
          `Basic ${Buffer.from(`${'x'.repeat(3000)}:${'y'.repeat(3000)}`).toString('base64')}`,
          `Bearer ${basicClient.secret}`,
          `Digest username="${basicClient.id}"`,
          `${basic(basicClient.id, basicClient.secret)} trailing`,
          `Basic ${Buffer.from(`${basicClient.id}:${basicClient.secret}`).toString('base64')}, Basic abc=`,
        ];
        for (const header of headers) {
          const res = await t.http().get('/v1/clients/me').set('Authorization', header);
          assertInvalidClient(res, reference);
        }
      });

      it('stops accepting the old secret once it is rotated', async () => {
        const c = await createClient(t.gw, { name: 'Rotating', actions: ['payment_code.issue'] }, CLI);
        const rotated = await rotateClientSecret(t.gw, c.client.clientId, CLI);
        assert.notEqual(rotated.clientSecret, c.clientSecret);
        assertInvalidClient(await t.http().get('/v1/clients/me').set('Authorization', basic(c.client.clientId, c.clientSecret as string)));
        const ok = await t.http().get('/v1/clients/me').set('Authorization', basic(c.client.clientId, rotated.clientSecret));
        assert.equal(ok.status, 200);
      });

      it('does not let a private_key_jwt client authenticate with a Basic header', async () => {
        assertInvalidClient(await t.http().get('/v1/clients/me').set('Authorization', basic(jwtClientId, 'anything')));
      });

      it('parses RFC 6749 §2.3.1 form-encoded credentials', () => {
        const header = `Basic ${Buffer.from('my%3Aclient+id:s%C3%A9cret%2B+x').toString('base64')}`;
        assert.deepEqual(parseBasicCredentials(header), { clientId: 'my:client id', secret: 'sécret+ x' });
        assert.equal(parseBasicCredentials('Basic'), undefined);
        assert.equal(parseBasicCredentials(`Basic ${'A'.repeat(5000)}`), undefined);
      });

      it('never logs the secret', async () => {
        await t.http().get('/v1/clients/me').set('Authorization', basic(basicClient.id, basicClient.secret));
        await t.http().get('/v1/clients/me').set('Authorization', basic(basicClient.id, `${basicClient.secret}x`));
        assert.ok(t.logs.text.includes('client authentication failed'));
        assert.ok(!t.logs.text.includes(basicClient.secret));
      });
    });

    describe('private_key_jwt', () => {
      it('accepts ES256, EdDSA and PS256 assertions signed with a registered key, for either audience', async () => {
        for (const [key, aud] of [
          [es, tokenAud],
          [ed, tokenAud],
          [ps, issuerAud],
          // A list is fine as long as this gateway is its sole member (draft-ietf-oauth-rfc7523bis).
          [es, [issuerAud]],
        ] as const) {
          const res = await presentAssertion(await sign(key, claims({ aud })));
          assert.equal(res.status, 200, `${key.alg}: ${res.text}`);
          assert.equal(res.body.client_id, jwtClientId);
          assert.deepEqual(res.body.allowed_actions, ['payment_code.issue', 'payment_code.offline_seed']);
        }
      });

      it('accepts an assertion without iat when exp is within 60 s, and a matching client_id field', async () => {
        const res = await presentAssertion(await sign(es, claims({ iat: undefined, exp: nowSeconds() + 50 })), { client_id: jwtClientId });
        assert.equal(res.status, 200, res.text);
      });

      it('accepts an assertion exactly once', async () => {
        const assertion = await sign(es, claims());
        assert.equal((await presentAssertion(assertion)).status, 200);
        assertInvalidClient(await presentAssertion(assertion));
        // Still refused a little later, while the assertion itself has not expired.
        t.clock.advance(20);
        assertInvalidClient(await presentAssertion(assertion));
      });

      it('lets exactly one of 10 parallel presentations of one assertion through', async () => {
        const assertion = await sign(ed, claims());
        const results = await Promise.all(Array.from({ length: 10 }, () => presentAssertion(assertion)));
        const statuses = results.map((r) => r.status).sort();
        assert.deepEqual(statuses, [200, 401, 401, 401, 401, 401, 401, 401, 401, 401]);
        for (const r of results.filter((x) => x.status === 401)) assertInvalidClient(r);
      });

      it('rejects expired assertions, lifetimes over 60 s and iat in the future', async () => {
        const now = nowSeconds();
        const cases: Record<string, JWTPayload> = {
          expired: claims({ iat: now - 50, exp: now - 10 }),
          'lifetime 120 s': claims({ iat: now, exp: now + 120 }),
          'lifetime 61 s': claims({ iat: now - 1, exp: now + 60 }),
          'no iat, exp 2 min ahead': claims({ iat: undefined, exp: now + 120 }),
          'iat in the future': claims({ iat: now + 30, exp: now + 60 }),
          'nbf in the future': claims({ nbf: now + 30, exp: now + 50 }),
          'no exp': claims({ exp: undefined }),
          'no jti': claims({ jti: undefined }),
          'empty jti': claims({ jti: '' }),
          'numeric jti': claims({ jti: 42 }),
        };
        for (const [name, payload] of Object.entries(cases)) {
          const res = await presentAssertion(await sign(es, payload));
          assert.equal(res.status, 401, name);
          assertInvalidClient(res);
        }
      });

      it('rejects a wrong audience, and iss/sub that are not the client', async () => {
        const cases: Record<string, JWTPayload> = {
          'aud elsewhere': claims({ aud: 'https://other-gateway.example/v1/stepup/token' }),
          'aud with a trailing path': claims({ aud: `${tokenAud}/x` }),
          'no aud': claims({ aud: undefined }),
          // Made out to several audiences: any of them could replay it here.
          'aud list with another audience': claims({ aud: [issuerAud, 'https://other-service.example'] }),
          'aud list with both of our names': claims({ aud: [issuerAud, tokenAud] }),
          'sub differs': claims({ sub: otherJwtClientId }),
          'iss differs (another client, our key)': claims({ iss: otherJwtClientId, sub: otherJwtClientId }),
          'iss unknown': claims({ iss: 'cli_unknown', sub: 'cli_unknown' }),
          'iss missing': claims({ iss: undefined }),
          'iss not a string': claims({ iss: 7, sub: 7 }),
        };
        for (const [name, payload] of Object.entries(cases)) {
          const res = await presentAssertion(await sign(es, payload));
          assert.equal(res.status, 401, name);
          assertInvalidClient(res);
        }
        assertInvalidClient(await presentAssertion(await sign(es, claims()), { client_id: otherJwtClientId }));
      });

      it('rejects a key that is not in the JWKS, even with a registered kid', async () => {
        assertInvalidClient(await presentAssertion(await sign(stranger, claims())));
        assertInvalidClient(await presentAssertion(await sign(stranger, claims(), { kid: 'unknown-kid' })));
      });

      it('rejects RS256 even from a registered RSA key', async () => {
        const pkcs1 = await importPKCS8(await exportPKCS8(ps.privateKey), 'RS256');
        assertInvalidClient(await presentAssertion(await sign({ ...ps, alg: 'RS256', privateKey: pkcs1 }, claims())));
      });

      it('rejects alg none, in any spelling and with or without a signature', async () => {
        for (const alg of ['none', 'None', 'NONE', 'noNE']) {
          const unsigned = `${b64url({ alg, kid: es.kid })}.${b64url(claims())}`;
          assertInvalidClient(await presentAssertion(`${unsigned}.`));
          assertInvalidClient(await presentAssertion(`${unsigned}.AAAA`));
        }
      });

      it('rejects HS256 signed with the public key as the HMAC secret', async () => {
        for (const secret of [JSON.stringify(es.publicJwk), es.publicJwk.x as string, JSON.stringify(ps.publicJwk)]) {
          const input = `${b64url({ alg: 'HS256', kid: es.kid, typ: 'JWT' })}.${b64url(claims())}`;
          const mac = createHmac('sha256', secret).update(input).digest('base64url');
          assertInvalidClient(await presentAssertion(`${input}.${mac}`));
        }
      });

      it('ignores embedded jwk and jku headers (only the registered JWKS counts)', async () => {
        assertInvalidClient(await presentAssertion(await sign(stranger, claims(), { jwk: stranger.publicJwk })));
        assertInvalidClient(await presentAssertion(await sign(stranger, claims(), { jku: 'https://attacker.example/jwks.json' })));
      });

      it('refuses a correctly signed assertion whose header or payload repeats a member (jose would keep the last)', async () => {
        const signText = (header: string, payload: string) => {
          const input = `${Buffer.from(header).toString('base64url')}.${Buffer.from(payload).toString('base64url')}`;
          const signature = cryptoSign('sha256', Buffer.from(input), { key: KeyObject.from(es.privateKey), dsaEncoding: 'ieee-p1363' });
          return `${input}.${signature.toString('base64url')}`;
        };
        const header = JSON.stringify({ alg: 'ES256', kid: es.kid });
        // The hand-signed assertion is accepted as it is: what is refused below is the repeat alone.
        const fine = await presentAssertion(signText(header, JSON.stringify(claims())));
        assert.equal(fine.status, 200, fine.text);
        const reference = assertInvalidClient(await presentAssertion('not-a-jwt'));
        const payload = (c: JWTPayload) => JSON.stringify(c);
        const variants = [
          // The same iss twice, and an iss naming another client first: either way one reading only.
          signText(header, payload(claims()).replace(/}$/, `,"iss":${JSON.stringify(jwtClientId)}}`)),
          signText(header, `{"iss":${JSON.stringify(otherJwtClientId)},${payload(claims()).slice(1)}`),
          signText(header, payload(claims()).replace('"jti":', '"jti":"first","jti":')),
          signText(header.replace(/}$/, `,"kid":${JSON.stringify(es.kid)}}`), payload(claims())),
        ];
        for (const assertion of variants) assertInvalidClient(await presentAssertion(assertion), reference);
        assert.match(t.logs.text, /assertion payload repeats a member \(\/iss\)/);
        assert.match(t.logs.text, /assertion header repeats a member \(\/kid\)/);
      });

      it('answers garbage assertions and wrong field combinations with the same 401', async () => {
        const reference = assertInvalidClient(await presentAssertion('not-a-jwt'));
        const good = await sign(es, claims());
        const bodies: unknown[] = [
          { client_assertion_type: ASSERTION_TYPE },
          { client_assertion: good },
          { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer', client_assertion: good },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: 42 },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: ['a'] },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: 'a.b.c' },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: `${b64url({ alg: 'ES256' })}.bm90IGpzb24.AAAA` },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: `${b64url({ alg: 'ES256' })}.${b64url([1, 2])}.AAAA` },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: `${good}.extra` },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: 'x'.repeat(9000) },
          { client_assertion_type: ASSERTION_TYPE, client_assertion: good, client_id: 5 },
        ];
        for (const body of bodies) assertInvalidClient(await t.http().post('/v1/clients/me').send(body as object), reference);
        assertInvalidClient(await t.http().post('/v1/clients/me').send([1, 2, 3]), reference);
        // The good assertion was never accepted above, so it still works now.
        assert.equal((await presentAssertion(good)).status, 200);
      });

      it('refuses a request that uses two methods at once', async () => {
        const res = await presentAssertion(await sign(es, claims())).set('Authorization', basic(basicClient.id, basicClient.secret));
        assertInvalidClient(res);
      });

      it('does not accept assertions for a client_secret_basic client, or for a disabled one', async () => {
        assertInvalidClient(await presentAssertion(await sign(es, claims({ iss: basicClient.id, sub: basicClient.id }))));
        const doomed = await createClient(t.gw, { name: 'Doomed', actions: ['payment_code.issue'], authMethod: 'private_key_jwt', jwks: { keys: [es.publicJwk] } }, CLI);
        const payload = claims({ iss: doomed.client.clientId, sub: doomed.client.clientId });
        assert.equal((await presentAssertion(await sign(es, payload))).status, 200);
        await disableClient(t.gw, doomed.client.clientId, CLI);
        assertInvalidClient(await presentAssertion(await sign(es, { ...payload, jti: randomUUID() })));
      });

      it('follows a JWKS replacement: the removed key stops working, the new one works', async () => {
        const rotating = await createClient(t.gw, { name: 'Key rotation', actions: ['payment_code.issue'], authMethod: 'private_key_jwt', jwks: { keys: [es.publicJwk] } }, CLI);
        const id = rotating.client.clientId;
        const mine = (over: Record<string, unknown> = {}) => claims({ iss: id, sub: id, ...over });
        assert.equal((await presentAssertion(await sign(es, mine()))).status, 200);
        await setClientJwks(t.gw, id, { keys: [ed.publicJwk] }, CLI);
        assertInvalidClient(await presentAssertion(await sign(es, mine())));
        assert.equal((await presentAssertion(await sign(ed, mine()))).status, 200);
      });

      it('prunes remembered jtis once their assertions have expired', async () => {
        const count = async () =>
          Number((await t.gw.store.db.selectFrom('client_assertion_jtis').select((eb) => eb.fn.countAll().as('n')).where('client_id', '=', jwtClientId).executeTakeFirstOrThrow()).n);
        assert.equal((await presentAssertion(await sign(es, claims()))).status, 200);
        assert.ok((await count()) >= 1);
        t.clock.advance(120 + ASSERTION_JTI_PRUNE_GRACE_SECONDS);
        assert.equal((await presentAssertion(await sign(es, claims()))).status, 200);
        assert.equal(await count(), 1);
      });

      it('a gateway process whose clock runs ahead does not forget a jti that one with a slower clock still accepts the assertion for', async () => {
        const replayed = await sign(es, claims());
        const issuedAt = t.clock.now().getTime();
        assert.equal((await presentAssertion(replayed)).status, 200);
        // Process A, its clock 10 s ahead: the assertion (exp + 30 s) is past its exp + skew
        // for A, which authenticates another request of the client and prunes.
        t.clock.set(issuedAt + (30 + ASSERTION_CLOCK_SKEW_SECONDS + 1) * 1000);
        assert.equal((await presentAssertion(await sign(es, claims()))).status, 200);
        // Process B, on time: within exp + skew the assertion would pass every check but its jti.
        t.clock.set(issuedAt + (30 + ASSERTION_CLOCK_SKEW_SECONDS - 9) * 1000);
        assertInvalidClient(await presentAssertion(replayed));
      });

      it('never logs the assertion', async () => {
        const assertion = await sign(es, claims({ aud: 'https://wrong.example' }));
        assertInvalidClient(await presentAssertion(assertion));
        assert.ok(!t.logs.text.includes(assertion.split('.')[2] as string));
      });
    });
  });
}

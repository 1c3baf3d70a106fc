import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { exportJWK, generateSecret, type JWK } from 'jose';
import { FixedClock } from '../../src/clock.ts';
import { createJwksCache, StepUpTokenError, VerifierUnavailableError, type JwksCacheOptions } from '../../src/verifier/index.ts';
import { generateSigningKey, serveJwks, type JwksServer, type SigningKey } from '../helpers/token-minter.ts';

const T0 = Date.UTC(2026, 2, 1, 8, 0, 0);
const clock = new FixedClock(T0);
let es: SigningKey;
let ed: SigningKey;
let published: JWK[];
let server: JwksServer;

before(async () => {
  es = await generateSigningKey('ES256', 'es-1');
  ed = await generateSigningKey('EdDSA', 'ed-1');
  server = await serveJwks(() => ({ keys: published }));
});
after(async () => {
  await server.close();
});
beforeEach(() => {
  clock.set(T0);
  published = [es.publicJwk, ed.publicJwk];
  server.respond(() => ({ body: { keys: published } }));
});

function cache(options: Partial<JwksCacheOptions> = {}) {
  return createJwksCache({ jwksUri: server.url, clock, ...options });
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StepUpTokenError || err instanceof VerifierUnavailableError, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  });
}

describe('createJwksCache', () => {
  it('fetches once, caches, and hands out the same imported key every time', async () => {
    const jwks = cache();
    const start = server.requests;
    const first = await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    for (let i = 0; i < 10; i += 1) assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), first);
    const edKey = await jwks.getKey({ alg: 'EdDSA', kid: 'ed-1' });
    // node:crypto KeyObjects (jose verifies with them through node:crypto, faster than WebCrypto).
    assert.equal(edKey.asymmetricKeyType, 'ed25519');
    assert.equal(first.asymmetricKeyType, 'ec');
    assert.equal(first.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(first.type, 'public');
    assert.equal(server.requests - start, 1);
    assert.equal(jwks.fetchCount, 1);
  });

  it('shares one fetch between concurrent first callers', async () => {
    const jwks = cache();
    const start = server.requests;
    const keys = await Promise.all(Array.from({ length: 20 }, () => jwks.getKey({ alg: 'ES256', kid: 'es-1' })));
    assert.equal(new Set(keys).size, 1);
    assert.equal(server.requests - start, 1);
  });

  it('refetches after cacheMaxAgeSeconds and keeps the imported key when the material is unchanged', async () => {
    const jwks = cache({ cacheMaxAgeSeconds: 300 });
    const start = server.requests;
    const before = await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    clock.advance(299);
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    assert.equal(server.requests - start, 1);
    clock.advance(1);
    assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), before);
    assert.equal(server.requests - start, 2);
  });

  it('refreshes on an unknown kid, rate-limited, and picks up a rotated key', async () => {
    const jwks = cache({ minRefreshIntervalSeconds: 30 });
    const start = server.requests;
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    const rotated = await generateSigningKey('ES256', 'es-2');
    published = [es.publicJwk, rotated.publicJwk];

    // Within the interval: no fetch, a flood of unknown kids changes nothing.
    const flood = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => jwks.getKey({ alg: 'ES256', kid: `random-${i}` })));
    assert.ok(flood.every((r) => r.status === 'rejected' && (r.reason as StepUpTokenError).code === 'kid_unknown'));
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-2' }), 'kid_unknown');
    assert.equal(server.requests - start, 1);

    // After the interval the next unknown kid refreshes once: the new key is found.
    clock.advance(30);
    const results = await Promise.allSettled([jwks.getKey({ alg: 'ES256', kid: 'es-2' }), jwks.getKey({ alg: 'ES256', kid: 'random-x' })]);
    assert.equal(results[0]?.status, 'fulfilled');
    assert.equal(results[1]?.status, 'rejected');
    assert.equal(server.requests - start, 2);

    // And a flood right after that still does not fetch.
    for (let i = 0; i < 20; i += 1) await expectCode(jwks.getKey({ alg: 'ES256', kid: `again-${i}` }), 'kid_unknown');
    assert.equal(server.requests - start, 2);
  });

  it('forgets a key the gateway stopped publishing', async () => {
    const jwks = cache();
    await jwks.getKey({ alg: 'EdDSA', kid: 'ed-1' });
    published = [es.publicJwk];
    clock.advance(300);
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    await expectCode(jwks.getKey({ alg: 'EdDSA', kid: 'ed-1' }), 'kid_unknown');
  });

  it('uses only public EC P-256 and OKP Ed25519 signature keys', async () => {
    const rsa = await exportJWK(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey);
    const p384 = await exportJWK(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey);
    const x25519 = await exportJWK(generateKeyPairSync('x25519').publicKey);
    const ed448 = await exportJWK(generateKeyPairSync('ed448').publicKey);
    const oct = await exportJWK(await generateSecret('HS256', { extractable: true }));
    const privateEc = await exportJWK(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    const dupA = await generateSigningKey('ES256', 'dup');
    const dupB = await generateSigningKey('ES256', 'dup');
    published = [
      { ...rsa, kid: 'rsa', alg: 'RS256' },
      { ...p384, kid: 'p384' },
      { ...x25519, kid: 'x25519' },
      { ...ed448, kid: 'ed448' },
      { ...oct, kid: 'oct' },
      { ...privateEc, kid: 'private' },
      { ...es.publicJwk, kid: 'enc', use: 'enc' },
      { ...es.publicJwk, kid: 'ops', key_ops: ['encrypt'] },
      { ...es.publicJwk, kid: 'wrong-alg', alg: 'ES384' },
      { ...es.publicJwk, kid: 'bad-point', x: 'AAAA' },
      { ...es.publicJwk, kid: undefined },
      dupA.publicJwk,
      dupB.publicJwk,
      { ...es.publicJwk, kid: 'ok-es', use: undefined, alg: undefined },
      { ...ed.publicJwk, kid: 'ok-ed', alg: 'Ed25519', key_ops: ['verify'] },
    ] as JWK[];
    const jwks = cache();
    for (const kid of ['rsa', 'p384', 'x25519', 'ed448', 'oct', 'private', 'enc', 'ops', 'wrong-alg', 'bad-point', 'dup']) {
      await expectCode(jwks.getKey({ alg: 'ES256', kid }), 'kid_unknown');
      await expectCode(jwks.getKey({ alg: 'EdDSA', kid }), 'kid_unknown');
    }
    await jwks.getKey({ alg: 'ES256', kid: 'ok-es' });
    await jwks.getKey({ alg: 'EdDSA', kid: 'ok-ed' });
  });

  it('refuses a key for another algorithm than the one it is (no key confusion)', async () => {
    const jwks = cache();
    await expectCode(jwks.getKey({ alg: 'EdDSA', kid: 'es-1' }), 'signature_invalid');
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'ed-1' }), 'signature_invalid');
    await expectCode(jwks.getKey({ alg: 'HS256', kid: 'es-1' }), 'alg_not_allowed');
    await expectCode(jwks.getKey({ alg: 'ES256' }), 'token_malformed');
  });

  for (const [label, answer] of [
    ['HTTP 500', { status: 500, body: { keys: [] } }],
    ['HTTP 404', { status: 404, body: 'nope', raw: true }],
    ['a redirect', { status: 302, body: '', raw: true, headers: { location: 'https://evil.example/jwks.json' } }],
    ['not JSON', { body: '<html>', raw: true }],
    ['not a JWK set', { body: { keys: 'x' } }],
    ['a JSON array', { body: [] }],
    ['an oversized body', { body: 'x'.repeat(200 * 1024), raw: true }],
  ] as const) {
    it(`fails closed (jwks_unavailable) on ${label}, and does not retry before the interval`, async () => {
      server.respond(() => answer);
      const jwks = cache({ minRefreshIntervalSeconds: 30 });
      const start = server.requests;
      await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
      await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
      assert.equal(server.requests - start, 1);
      server.respond(() => ({ body: { keys: published } }));
      clock.advance(30);
      await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
      assert.equal(server.requests - start, 2);
    });
  }

  it('fails closed when the gateway is unreachable or too slow', async () => {
    const refused = createJwksCache({ jwksUri: 'http://127.0.0.1:9/jwks.json', clock });
    await expectCode(refused.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
    const hanging: typeof fetch = (_url, init) =>
      new Promise((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal?.reason));
      });
    const slow = createJwksCache({ jwksUri: 'https://gateway.example/jwks.json', fetch: hanging, timeoutSeconds: 0.05, clock });
    await expectCode(slow.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
  });

  it('keeps using the last good keys for staleIfErrorSeconds when a refresh fails, then fails closed', async () => {
    const jwks = cache({ cacheMaxAgeSeconds: 300, staleIfErrorSeconds: 600, minRefreshIntervalSeconds: 30 });
    const key = await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    server.respond(() => ({ status: 503, body: {} }));
    clock.advance(300);
    assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), key);
    clock.advance(599);
    assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), key);
    clock.advance(1);
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
  });

  it('answers jwks_unavailable (not kid_unknown) when the refresh for an unknown kid fails', async () => {
    const jwks = cache({ minRefreshIntervalSeconds: 30 });
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    server.respond(() => ({ status: 502, body: {} }));
    clock.advance(30);
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-new' }), 'jwks_unavailable');
    // Known keys keep working meanwhile, and the failed attempt counts for the rate limit.
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-new' }), 'kid_unknown');
  });

  it('accepts https, and http only for loopback or when explicitly allowed', () => {
    createJwksCache({ jwksUri: 'https://gateway.example/.well-known/jwks.json' });
    createJwksCache({ jwksUri: 'http://localhost:3000/.well-known/jwks.json' });
    createJwksCache({ jwksUri: 'http://[::1]:3000/.well-known/jwks.json' });
    createJwksCache({ jwksUri: 'http://gateway:3000/.well-known/jwks.json', allowInsecureHttp: true });
    for (const jwksUri of ['http://gateway.example/.well-known/jwks.json', 'ftp://gateway.example/jwks', 'file:///etc/jwks.json', 'jwks.json', '']) {
      assert.throws(() => createJwksCache({ jwksUri }), TypeError, jwksUri);
    }
    assert.throws(() => createJwksCache({ jwksUri: server.url, minRefreshIntervalSeconds: -1 }), TypeError);
    assert.throws(() => createJwksCache({ jwksUri: server.url, cacheMaxAgeSeconds: Number.NaN }), TypeError);
  });
});

describe('createJwksCache: the gateway\'s caching headers', () => {
  /** The number of fetches after `seconds` more, with a lookup of a known key at that moment. */
  async function fetchesAfter(jwks: ReturnType<typeof cache>, seconds: number): Promise<number> {
    clock.advance(seconds);
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    return jwks.fetchCount;
  }

  function answerWith(headers: Record<string, string>) {
    server.respond(() => ({ body: { keys: published }, headers }));
  }

  it('refetches when the answer\'s max-age runs out, not at cacheMaxAgeSeconds', async () => {
    answerWith({ 'cache-control': 'public, max-age=60' });
    const jwks = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
    assert.equal(await fetchesAfter(jwks, 0), 1);
    assert.equal(await fetchesAfter(jwks, 59), 1);
    assert.equal(await fetchesAfter(jwks, 1), 2);
    // Every answer sets the lifetime anew: this one says nothing, so the configured 300 s apply.
    answerWith({});
    clock.advance(60);
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    assert.equal(jwks.fetchCount, 3);
    assert.equal(await fetchesAfter(jwks, 299), 3);
    assert.equal(await fetchesAfter(jwks, 1), 4);
  });

  it('drops a key the gateway stopped publishing once max-age has passed', async () => {
    answerWith({ 'cache-control': 'max-age=45' });
    const jwks = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
    const key = await jwks.getKey({ alg: 'EdDSA', kid: 'ed-1' });
    published = [es.publicJwk];
    clock.advance(44);
    assert.equal(await jwks.getKey({ alg: 'EdDSA', kid: 'ed-1' }), key, 'fresh: the cached set still holds it');
    clock.advance(1);
    await expectCode(jwks.getKey({ alg: 'EdDSA', kid: 'ed-1' }), 'kid_unknown');
  });

  it('never keeps a set longer than cacheMaxAgeSeconds, whatever max-age says', async () => {
    answerWith({ 'cache-control': 'max-age=86400' });
    const jwks = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
    assert.equal(await fetchesAfter(jwks, 0), 1);
    assert.equal(await fetchesAfter(jwks, 299), 1);
    assert.equal(await fetchesAfter(jwks, 1), 2);
  });

  for (const cacheControl of ['no-store', 'no-cache', 'max-age=0', 'private, max-age=5', 'max-age=60, max-age=120']) {
    it(`refetches after minRefreshIntervalSeconds, not sooner, on "${cacheControl}"`, async () => {
      answerWith({ 'cache-control': cacheControl });
      const jwks = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
      assert.equal(await fetchesAfter(jwks, 0), 1);
      // The key set in hand is used meanwhile: the token being verified is verified with it.
      for (let i = 0; i < 10; i += 1) await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
      assert.equal(await fetchesAfter(jwks, 29), 1);
      assert.equal(await fetchesAfter(jwks, 1), 2);
    });
  }

  it('subtracts the Age a proxy added', async () => {
    answerWith({ 'cache-control': 'public, max-age=120', age: '40' });
    const jwks = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
    assert.equal(await fetchesAfter(jwks, 0), 1);
    assert.equal(await fetchesAfter(jwks, 79), 1);
    assert.equal(await fetchesAfter(jwks, 1), 2);
    // Older than its max-age already: as max-age=0.
    answerWith({ 'cache-control': 'public, max-age=120', age: '500' });
    clock.advance(80);
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    assert.equal(jwks.fetchCount, 3);
    assert.equal(await fetchesAfter(jwks, 29), 3);
    assert.equal(await fetchesAfter(jwks, 1), 4);
  });

  it('ignores a malformed Age, and falls back to cacheMaxAgeSeconds on a malformed Cache-Control', async () => {
    answerWith({ 'cache-control': 'max-age=60', age: 'yesterday' });
    const jwks = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
    assert.equal(await fetchesAfter(jwks, 0), 1);
    assert.equal(await fetchesAfter(jwks, 59), 1);
    assert.equal(await fetchesAfter(jwks, 1), 2);
    for (const malformed of ['max-age=sixty', 'max-age=-1', 'max-age=60;', 'max-age="60', 'public']) {
      answerWith({ 'cache-control': malformed });
      const other = cache({ cacheMaxAgeSeconds: 300, minRefreshIntervalSeconds: 30 });
      assert.equal(await fetchesAfter(other, 0), 1, malformed);
      assert.equal(await fetchesAfter(other, 299), 1, malformed);
      assert.equal(await fetchesAfter(other, 1), 2, malformed);
    }
  });

  it('keeps a cacheMaxAgeSeconds below minRefreshIntervalSeconds as the upper bound', async () => {
    answerWith({ 'cache-control': 'max-age=600' });
    const jwks = cache({ cacheMaxAgeSeconds: 10, minRefreshIntervalSeconds: 30, staleIfErrorSeconds: 0 });
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    server.respond(() => ({ status: 503, body: {} }));
    clock.advance(9);
    await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    clock.advance(1);
    // Expired at 10 s; the refetch it may make fails and there is no stale grace: closed.
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
  });

  it('counts staleIfErrorSeconds from the end of the advertised lifetime, then fails closed', async () => {
    answerWith({ 'cache-control': 'max-age=60' });
    const jwks = cache({ cacheMaxAgeSeconds: 300, staleIfErrorSeconds: 600, minRefreshIntervalSeconds: 30 });
    const key = await jwks.getKey({ alg: 'ES256', kid: 'es-1' });
    server.respond(() => ({ status: 503, body: {}, headers: { 'cache-control': 'max-age=86400' } }));
    clock.advance(60);
    assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), key, 'stale, within the grace');
    assert.equal(jwks.fetchCount, 2);
    clock.advance(599);
    assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), key);
    clock.advance(1);
    // 60 s + 600 s after the fetch: closed (with the configured 300 s it would still be 240 s away).
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
    await expectCode(jwks.getKey({ alg: 'ES256', kid: 'es-1' }), 'jwks_unavailable');
    // The gateway is back: the next allowed fetch restores service.
    answerWith({ 'cache-control': 'max-age=60' });
    clock.advance(30);
    assert.equal(await jwks.getKey({ alg: 'ES256', kid: 'es-1' }), key);
  });
});

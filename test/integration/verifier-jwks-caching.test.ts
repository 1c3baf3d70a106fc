import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { revokeSigningKey } from '../../src/flows/signing-keys.ts';
import { issueStepUpToken, type StepUpClaims } from '../../src/stepup/issue-token.ts';
import { JWKS_MAX_AGE_SECONDS, type ActiveKey } from '../../src/stepup/signing-keys.ts';
import { createJwksCache, MemoryReplayStore, StepUpTokenError, VerifierUnavailableError, verifyStepUpToken, type JwksCache } from '../../src/verifier/index.ts';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { listen } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

// A relying party's JWKS cache against a real gateway over HTTP: how long a revoked signing
// key stays trusted there (docs/keys.md, docs/relying-party.md §6).

const ISSUER = 'http://localhost:8080';

for (const dialect of testDialects()) {
  describe(`relying-party JWKS cache against the gateway (${dialect})`, () => {
    let tg: TestGateway;
    let server: Awaited<ReturnType<typeof listen>>;
    before(async () => {
      tg = await createTestGateway({ dialect });
      server = await listen(tg.app);
    });
    after(async () => {
      await server.close();
      await tg.close();
    });

    const nowSeconds = () => Math.floor(tg.clock.now().getTime() / 1000);

    function tokenFrom(key: ActiveKey): Promise<string> {
      const now = nowSeconds();
      const claims: StepUpClaims = {
        iss: ISSUER,
        sub: 'usr_1',
        aud: 'cli_pay',
        iat: now,
        exp: now + 120,
        jti: randomUUID(),
        txn: 'stp_1',
        auth_time: now,
        acr: 'urn:stepgate:aal2',
        amr: ['pwd', 'otp'],
        authorization_details: [{ type: 'payment_code.issue', amount: '120.00', currency: 'CNY' }],
      };
      return issueStepUpToken(key, claims);
    }

    /** The verifier as a relying service runs it: its defaults (30 s / 300 s / 900 s), this gateway's JWKS over HTTP. */
    function relyingParty(): { jwks: JwksCache; verify(token: string): Promise<unknown> } {
      const jwks = createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json`, clock: tg.clock });
      const replayStore = new MemoryReplayStore({ clock: tg.clock });
      return {
        jwks,
        verify: (token) =>
          verifyStepUpToken(token, {
            issuer: ISSUER,
            audience: 'cli_pay',
            jwks,
            expectedSubject: 'usr_1',
            expectedAction: 'payment_code.issue',
            expectedContext: { amount: '120.00', currency: 'CNY' },
            replayStore,
            clock: tg.clock,
          }),
      };
    }

    const refusedAs = (code: string) => (err: unknown) => {
      assert.ok(err instanceof StepUpTokenError || err instanceof VerifierUnavailableError, String(err));
      assert.equal(err.code, code);
      return true;
    };

    async function publishedKids(): Promise<string[]> {
      return (await tg.http().get('/.well-known/jwks.json').expect(200)).body.keys.map((k: { kid: string }) => k.kid);
    }

    it('the gateway advertises a max-age of JWKS_MAX_AGE_SECONDS on its JWKS', async () => {
      const res = await tg.http().get('/.well-known/jwks.json').expect(200);
      assert.equal(res.headers['cache-control'], `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
      assert.equal(JWKS_MAX_AGE_SECONDS, 60);
    });

    it('a key revoked at the gateway is trusted until the advertised max-age, then refused (kid_unknown)', async () => {
      tg.clock.advance(600);
      tg.gw.keys.invalidate();
      const rp = relyingParty();
      const compromised = await tg.gw.keys.activeKey();
      await rp.verify(await tokenFrom(compromised)); // fetched now: fresh for 60 s
      assert.equal(rp.jwks.fetchCount, 1);

      tg.clock.advance(10);
      assert.ok(await revokeSigningKey(tg.gw, compromised.kid, { actor: 'usr_probe', reason: 'key leaked' }));
      assert.ok(!(await publishedKids()).includes(compromised.kid), 'out of the gateway JWKS at once');

      // Within max-age the relying party's copy still holds the key: documented, and the
      // reason the gateway's max-age is short.
      tg.clock.advance(JWKS_MAX_AGE_SECONDS - 10 - 1);
      await rp.verify(await tokenFrom(compromised));
      assert.equal(rp.jwks.fetchCount, 1, 'no fetch while the copy is fresh');

      // At max-age (not at the cache's own 300 s) it refetches and the key is gone.
      tg.clock.advance(1);
      await assert.rejects(rp.verify(await tokenFrom(compromised)), refusedAs('kid_unknown'));
      assert.equal(rp.jwks.fetchCount, 2);
      await rp.verify(await tokenFrom(await tg.gw.keys.activeKey())); // the replacement verifies
    });

    it('revoked by `stepgate keys revoke` in another process: trusted at most keyRefreshSeconds + max-age after the revocation', async () => {
      tg.clock.advance(600);
      tg.gw.keys.invalidate();
      const compromised = await tg.gw.keys.activeKey(); // this process loads its keys now (T)
      const revoked = await runCli(['keys', 'revoke', compromised.kid, '--reason', 'private key exposed', '--json'], cliEnv(tg));
      assert.equal(revoked.status, 0, revoked.stderr);
      const refreshSeconds = tg.config.stepup.keyRefreshSeconds;

      // Just before this process re-reads its keys it still publishes the revoked key, and a
      // relying party fetching now gets it, fresh for max-age.
      tg.clock.advance(refreshSeconds - 1);
      const rp = relyingParty();
      await rp.verify(await tokenFrom(compromised));
      tg.clock.advance(1);
      assert.ok(!(await publishedKids()).includes(compromised.kid), 'the gateway dropped it after keyRefreshSeconds');

      tg.clock.advance(JWKS_MAX_AGE_SECONDS - 2);
      await rp.verify(await tokenFrom(compromised));
      assert.equal(rp.jwks.fetchCount, 1);
      // T + keyRefreshSeconds - 1 + max-age: refetched, refused.
      tg.clock.advance(1);
      await assert.rejects(rp.verify(await tokenFrom(compromised)), refusedAs('kid_unknown'));
      assert.equal(rp.jwks.fetchCount, 2);
    });

    it('JWKS endpoint failing: known keys (a revoked one too) are served for staleIfErrorSeconds past max-age, then every token fails closed', async () => {
      tg.clock.advance(600);
      tg.gw.keys.invalidate();
      const rp = relyingParty();
      const compromised = await tg.gw.keys.activeKey();
      await rp.verify(await tokenFrom(compromised));
      assert.ok(await revokeSigningKey(tg.gw, compromised.kid, { actor: 'usr_probe', reason: 'key leaked' }));
      const replacement = await tg.gw.keys.activeKey();

      // The gateway cannot read its keys (its database is down).
      const jwks = tg.gw.keys.jwks;
      tg.gw.keys.jwks = async () => {
        throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
      };
      try {
        const failing = await tg.http().get('/.well-known/jwks.json').expect(503);
        // A failed read is never cacheable: a proxy must not serve the error as the key set.
        assert.equal(failing.headers['cache-control'], 'no-store');
        assert.match(failing.headers['content-type'] ?? '', /^application\/problem\+json/);

        // Past max-age the refetch fails: the last good set is used, the revoked key with it.
        tg.clock.advance(JWKS_MAX_AGE_SECONDS);
        await rp.verify(await tokenFrom(compromised));
        assert.equal(rp.jwks.fetchCount, 2);
        // The replacement's kid is not in the stale set, and the refetch that just failed holds
        // the next one off for minRefreshIntervalSeconds: refused as unknown (what the cache
        // does today; the unknown-kid flood guard is the same rate limit).
        await assert.rejects(rp.verify(await tokenFrom(replacement)), refusedAs('kid_unknown'));
        assert.equal(rp.jwks.fetchCount, 2);

        tg.clock.advance(900 - 1);
        await rp.verify(await tokenFrom(compromised));
        // max-age + staleIfErrorSeconds (900 by default) after the last good fetch: closed.
        tg.clock.advance(1);
        await assert.rejects(rp.verify(await tokenFrom(compromised)), refusedAs('jwks_unavailable'));
        await assert.rejects(rp.verify(await tokenFrom(replacement)), refusedAs('jwks_unavailable'));
      } finally {
        tg.gw.keys.jwks = jwks;
      }

      // The gateway is back: the next fetch the rate limit allows brings the current set.
      tg.clock.advance(30);
      await rp.verify(await tokenFrom(replacement));
      await assert.rejects(rp.verify(await tokenFrom(compromised)), refusedAs('kid_unknown'));
    });
  });
}

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { masterKeyFromBytes, Sealer } from '../../src/crypto/sealer.ts';
import { revokeSigningKey, rotateSigningKey } from '../../src/flows/signing-keys.ts';
import { issueStepUpToken, type StepUpClaims } from '../../src/stepup/issue-token.ts';
import { SigningKeyRing, type SigningAlg } from '../../src/stepup/signing-keys.ts';
import { createJwksCache, MemoryReplayStore, StepUpTokenError, verifyStepUpToken } from '../../src/verifier/index.ts';
import { needTool } from '../helpers/env.ts';
import { listen } from '../helpers/stepup-fixtures.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { createTestStore, testDialects } from '../helpers/stores.ts';

const ISSUER = 'http://localhost:8080';

function claimsAt(nowSeconds: number, ttl = 120): StepUpClaims {
  return {
    iss: ISSUER,
    sub: 'usr_1',
    aud: 'cli_pay',
    iat: nowSeconds,
    exp: nowSeconds + ttl,
    jti: randomUUID(),
    txn: 'stp_1',
    auth_time: nowSeconds,
    acr: 'urn:stepgate:aal2',
    amr: ['pwd', 'otp'],
    authorization_details: [{ type: 'payment_code.issue', amount: '120.00', currency: 'CNY' }],
  };
}

async function verifyWithJose(tg: TestGateway, token: string) {
  const jwks = createLocalJWKSet(await tg.gw.keys.jwks());
  return jwtVerify(token, jwks, {
    algorithms: ['ES256', 'EdDSA'],
    typ: 'stepup+jwt',
    issuer: ISSUER,
    audience: 'cli_pay',
    currentDate: tg.clock.now(),
  });
}

for (const dialect of testDialects()) {
  for (const alg of ['ES256', 'EdDSA'] as SigningAlg[]) {
    describe(`signing keys (${dialect}, ${alg})`, () => {
      let tg: TestGateway;
      before(async () => {
        tg = await createTestGateway({ dialect, config: { stepup: { signingAlg: alg } } });
      });
      after(async () => {
        await tg.close();
      });

      it('creates one active key on first start, sealed at rest, and publishes only public parts', async () => {
        const rows = await tg.gw.store.db.selectFrom('signing_keys').selectAll().execute();
        assert.equal(rows.length, 1);
        const row = rows[0]!;
        assert.equal(row.status, 'active');
        assert.equal(row.alg, alg);
        assert.match(row.private_sealed, /^v1\./);
        const res = await tg.http().get('/.well-known/jwks.json').expect(200);
        assert.match(res.headers['cache-control'] ?? '', /max-age=\d+/);
        assert.equal(res.body.keys.length, 1);
        const jwk = res.body.keys[0];
        assert.equal(jwk.kid, row.kid);
        assert.equal(jwk.alg, alg);
        assert.equal(jwk.use, 'sig');
        for (const privateMember of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.equal(jwk[privateMember], undefined);
      });

      it('processes racing to create the first key on an empty database end with one active key', async () => {
        const fresh = await createTestStore(dialect);
        const second = await fresh.database.open();
        try {
          const sealer = new Sealer(masterKeyFromBytes(Buffer.from(tg.config.secrets.masterKey, 'base64')));
          const rings = [fresh.store, second, fresh.store, second, fresh.store, second].map(
            (s) => new SigningKeyRing({ db: s.db, sealer, clock: tg.clock, alg, refreshSeconds: 30 }),
          );
          await Promise.all(rings.map((r) => r.ensureActiveKey()));
          const active = await fresh.store.db.selectFrom('signing_keys').select('kid').where('status', '=', 'active').execute();
          assert.equal(active.length, 1);
          for (const ring of rings) assert.equal((await ring.activeKey()).kid, active[0]!.kid);
        } finally {
          await second.close();
          await fresh.cleanup();
        }
      });

      it('signs tokens with the typ, kid and alg header that jose verifies', async () => {
        const now = Math.floor(tg.clock.now().getTime() / 1000);
        const token = await issueStepUpToken(await tg.gw.keys.activeKey(), claimsAt(now));
        const { payload, protectedHeader } = await verifyWithJose(tg, token);
        assert.equal(protectedHeader.typ, 'stepup+jwt');
        assert.equal(protectedHeader.alg, alg);
        assert.equal(payload.acr, 'urn:stepgate:aal2');
        assert.deepEqual(payload.authorization_details, [{ type: 'payment_code.issue', amount: '120.00', currency: 'CNY' }]);
      });

      it('python3-jwt verifies a token against /.well-known/jwks.json', async (t) => {
        if (needTool(t, '/usr/bin/python3', 'python3-jwt')) return;
        const probe = spawnSync('/usr/bin/python3', ['-c', 'import jwt']);
        if (probe.status !== 0 && needTool(t, 'python3-jwt-module-missing', 'python3-jwt')) return;
        const now = Math.floor(Date.now() / 1000);
        tg.clock.set(now * 1000);
        const token = await issueStepUpToken(await tg.gw.keys.activeKey(), claimsAt(now));
        const jwks = (await tg.http().get('/.well-known/jwks.json').expect(200)).body;
        const file = join(tg.database.dataDir, 'jwks.json');
        writeFileSync(file, JSON.stringify(jwks));
        const script = new URL('../fixtures/pyjwt-verify.py', import.meta.url).pathname;
        const ok = spawnSync('/usr/bin/python3', [script, file, token, ISSUER, 'cli_pay'], { encoding: 'utf8' });
        assert.equal(ok.status, 0, ok.stderr);
        const out = JSON.parse(ok.stdout);
        assert.equal(out.header.typ, 'stepup+jwt');
        assert.equal(out.claims.sub, 'usr_1');
        // The independent verifier must also reject: wrong audience, tampered payload.
        const wrongAud = spawnSync('/usr/bin/python3', [script, file, token, ISSUER, 'cli_other'], { encoding: 'utf8' });
        assert.equal(wrongAud.status, 1);
        const [h, p, s] = token.split('.') as [string, string, string];
        const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
        payload.authorization_details[0].amount = '999999.00';
        const tampered = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
        const bad = spawnSync('/usr/bin/python3', [script, file, tampered, ISSUER, 'cli_pay'], { encoding: 'utf8' });
        assert.equal(bad.status, 1);
        assert.match(bad.stderr, /Signature/i);
      });

      it('rotation: old tokens verify until they expire, then the old key leaves the JWKS', async () => {
        const now = Math.floor(tg.clock.now().getTime() / 1000);
        const oldToken = await issueStepUpToken(await tg.gw.keys.activeKey(), claimsAt(now, 300));
        const oldKid = (await tg.gw.keys.activeKey()).kid;
        const rotated = await tg.gw.keys.rotate();
        assert.equal(rotated.retiredKid, oldKid);
        assert.notEqual(rotated.kid, oldKid);
        // Published at once, used only after one refresh interval: by then every process
        // (and every relying service refreshing on an unknown kid) can know it.
        const kids = (await tg.http().get('/.well-known/jwks.json').expect(200)).body.keys.map((k: { kid: string }) => k.kid);
        assert.deepEqual(new Set(kids), new Set([oldKid, rotated.kid]));
        assert.equal((await tg.gw.keys.activeKey()).kid, oldKid, 'the new key does not sign before it is published everywhere');
        tg.clock.advance(tg.gw.keys.activationDelaySeconds + 1);
        tg.gw.keys.invalidate();
        const newToken = await issueStepUpToken(await tg.gw.keys.activeKey(), claimsAt(now));
        const header = JSON.parse(Buffer.from(newToken.split('.')[0]!, 'base64url').toString());
        assert.equal(header.kid, rotated.kid);
        await verifyWithJose(tg, oldToken);
        // Just before the end of the publication window the old key is still there…
        tg.clock.advance(tg.gw.keys.retiredPublishSeconds - tg.gw.keys.activationDelaySeconds - 2);
        tg.gw.keys.invalidate();
        assert.ok((await tg.gw.keys.jwks()).keys.some((k) => k.kid === oldKid));
        // …after it, gone: the old token (long expired by now) can no longer be verified at all.
        tg.clock.advance(2);
        tg.gw.keys.invalidate();
        const after = (await tg.http().get('/.well-known/jwks.json').expect(200)).body.keys.map((k: { kid: string }) => k.kid);
        assert.deepEqual(after, [rotated.kid]);
        await assert.rejects(verifyWithJose(tg, oldToken), (err: { code?: string }) => err.code === 'ERR_JWKS_NO_MATCHING_KEY');
      });

      it('a rotation whose audit record cannot be written rotates nothing (no rotation without its record)', async () => {
        const keysBefore = await tg.gw.store.db.selectFrom('signing_keys').select(['kid', 'status']).orderBy('kid').execute();
        const append = tg.gw.audit.append;
        tg.gw.audit.append = async () => {
          throw new Error('audit store refused');
        };
        try {
          await assert.rejects(rotateSigningKey(tg.gw, alg, { actor: 'usr_probe', reason: 'scheduled rotation' }), /audit store refused/);
        } finally {
          tg.gw.audit.append = append;
        }
        assert.deepEqual(await tg.gw.store.db.selectFrom('signing_keys').select(['kid', 'status']).orderBy('kid').execute(), keysBefore);
        const rotated = await rotateSigningKey(tg.gw, alg, { actor: 'usr_probe', reason: 'scheduled rotation' });
        const record = await tg.gw.store.db.selectFrom('audit_log').select(['actor', 'data']).where('type', '=', 'signing_key.rotated').orderBy('seq', 'desc').executeTakeFirstOrThrow();
        assert.equal(record.actor, 'usr_probe');
        assert.equal((JSON.parse(record.data) as { kid: string }).kid, rotated.kid);
      });

      it('another process picks up a rotation after its refresh interval', async () => {
        const before = (await tg.gw.keys.activeKey()).kid;
        const other = await tg.database.open();
        try {
          const sealer = new Sealer(masterKeyFromBytes(Buffer.from(tg.config.secrets.masterKey, 'base64')));
          const ring = new SigningKeyRing({ db: other.db, sealer, clock: tg.clock, alg, refreshSeconds: 30 });
          const { kid } = await ring.rotate();
          assert.equal((await tg.gw.keys.activeKey()).kid, before, 'cached until refresh');
          tg.clock.advance(31);
          assert.equal((await tg.gw.keys.activeKey()).kid, kid);
        } finally {
          await other.close();
        }
      });

      it('revoking the active key (compromised): out of the JWKS at once, never signs again, a new key signs at once; audited', async () => {
        const now = Math.floor(tg.clock.now().getTime() / 1000);
        const compromised = (await tg.gw.keys.activeKey()).kid;
        const forged = await issueStepUpToken(await tg.gw.keys.activeKey(), claimsAt(now, 300));
        await verifyWithJose(tg, forged);
        const other = await tg.database.open();
        try {
          // Another gateway process that loaded its keys before the revocation.
          const sealer = new Sealer(masterKeyFromBytes(Buffer.from(tg.config.secrets.masterKey, 'base64')));
          const ring = new SigningKeyRing({ db: other.db, sealer, clock: tg.clock, alg, refreshSeconds: 30 });
          assert.equal((await ring.activeKey()).kid, compromised);

          const revoked = await revokeSigningKey(tg.gw, compromised, { actor: 'usr_probe', reason: 'key leaked' });
          assert.ok(revoked?.wasActive && revoked.newKid !== undefined);
          const kids = (await tg.http().get('/.well-known/jwks.json').expect(200)).body.keys.map((k: { kid: string }) => k.kid);
          assert.ok(!kids.includes(compromised), 'withdrawn from the JWKS at once, not after its tokens expire');
          assert.ok(kids.includes(revoked.newKid));
          // No hand-over period: the replacement signs at once.
          assert.equal((await tg.gw.keys.activeKey()).kid, revoked.newKid);
          // What the compromised key signed (or an attacker signs with it) no longer verifies.
          await assert.rejects(verifyWithJose(tg, forged), (err: { code?: string }) => err.code === 'ERR_JWKS_NO_MATCHING_KEY');
          const record = await tg.gw.store.db.selectFrom('audit_log').select(['actor', 'data']).where('type', '=', 'signing_key.revoked').orderBy('seq', 'desc').executeTakeFirstOrThrow();
          assert.equal(record.actor, 'usr_probe');
          assert.deepEqual(JSON.parse(record.data), { kid: compromised, wasActive: true, newKid: revoked.newKid, reason: 'key leaked' });

          // The other process follows within its refresh interval…
          tg.clock.advance(31);
          assert.equal((await ring.activeKey()).kid, revoked.newKid);
          assert.ok(!(await ring.jwks()).keys.some((k) => k.kid === compromised));
          // …and one whose clock runs behind the revocation's never publishes the key again.
          const behind = new SigningKeyRing({ db: other.db, sealer, clock: { now: () => new Date(tg.clock.now().getTime() - 3_600_000) }, alg, refreshSeconds: 30 });
          assert.ok(!(await behind.jwks()).keys.some((k) => k.kid === compromised));
          assert.notEqual((await behind.activeKey()).kid, compromised);
        } finally {
          await other.close();
        }
        // Once revoked, always revoked; an unknown kid changes nothing.
        assert.equal(await revokeSigningKey(tg.gw, compromised, { actor: 'usr_probe', reason: 'again' }), undefined);
        assert.equal(await revokeSigningKey(tg.gw, 'no-such-kid', { actor: 'usr_probe', reason: 'typo' }), undefined);
      });

      it('revoking a retired key withdraws it before its publication window ends, and it does not sign in the hand-over', async () => {
        const old = (await tg.gw.keys.activeKey()).kid;
        const rotated = await tg.gw.keys.rotate();
        // During the hand-over the retired key still signs (the new one is not yet everywhere)…
        assert.equal((await tg.gw.keys.activeKey()).kid, old);
        const revoked = await revokeSigningKey(tg.gw, old, { actor: 'usr_probe', reason: 'key leaked' });
        assert.deepEqual(revoked, { kid: old, wasActive: false, newKid: undefined });
        // …not once it is revoked: the new key signs at once, and it alone is published.
        assert.equal((await tg.gw.keys.activeKey()).kid, rotated.kid);
        const kids = (await tg.http().get('/.well-known/jwks.json').expect(200)).body.keys.map((k: { kid: string }) => k.kid);
        assert.ok(!kids.includes(old));
        assert.ok(kids.includes(rotated.kid));
      });

      it('a relying service stops accepting a revoked key at the first token of its replacement (the unknown kid refreshes its JWKS)', async () => {
        const server = await listen(tg.app);
        try {
          // The verifier as a relying service runs it, against this gateway's JWKS over HTTP.
          const jwks = createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json`, clock: tg.clock });
          const verify = (token: string) =>
            verifyStepUpToken(token, {
              issuer: ISSUER,
              audience: 'cli_pay',
              jwks,
              expectedSubject: 'usr_1',
              expectedAction: 'payment_code.issue',
              expectedContext: { amount: '120.00', currency: 'CNY' },
              replayStore: new MemoryReplayStore({ clock: tg.clock }),
              clock: tg.clock,
            });
          tg.clock.advance(60); // past the JWKS cache's refresh interval since any earlier test
          const now = () => Math.floor(tg.clock.now().getTime() / 1000);
          const compromised = await tg.gw.keys.activeKey();
          const stolen = await issueStepUpToken(compromised, claimsAt(now()));
          await verify(await issueStepUpToken(compromised, claimsAt(now()))); // cached: the key set holds it
          const revoked = await revokeSigningKey(tg.gw, compromised.kid, { actor: 'usr_probe', reason: 'key leaked' });
          assert.ok(revoked !== undefined);
          tg.clock.advance(31); // the cache's minRefreshIntervalSeconds
          const replacement = await tg.gw.keys.activeKey();
          assert.notEqual(replacement.kid, compromised.kid);
          await verify(await issueStepUpToken(replacement, claimsAt(now())));
          // The refresh that found the new kid dropped the revoked one, well before cacheMaxAgeSeconds.
          await assert.rejects(verify(stolen), (err: unknown) => err instanceof StepUpTokenError && err.code === 'kid_unknown');
        } finally {
          await server.close();
        }
      });

      it('a revocation whose audit record cannot be written revokes nothing', async () => {
        const kid = (await tg.gw.keys.activeKey()).kid;
        const keysBefore = await tg.gw.store.db.selectFrom('signing_keys').select(['kid', 'status', 'publish_until']).orderBy('kid').execute();
        const append = tg.gw.audit.append;
        tg.gw.audit.append = async () => {
          throw new Error('audit store refused');
        };
        try {
          await assert.rejects(revokeSigningKey(tg.gw, kid, { actor: 'usr_probe', reason: 'key leaked' }), /audit store refused/);
        } finally {
          tg.gw.audit.append = append;
        }
        assert.deepEqual(await tg.gw.store.db.selectFrom('signing_keys').select(['kid', 'status', 'publish_until']).orderBy('kid').execute(), keysBefore);
        assert.equal((await tg.gw.keys.activeKey()).kid, kid);
      });

      it('the discovery document names the issuer, JWKS and algorithms', async () => {
        const res = await tg.http().get('/.well-known/stepgate-configuration').expect(200);
        assert.equal(res.body.issuer, ISSUER);
        assert.equal(res.body.jwks_uri, `${ISSUER}/.well-known/jwks.json`);
        assert.deepEqual(res.body.signing_alg_values_supported, ['ES256', 'EdDSA']);
        assert.ok(!JSON.stringify(res.body).includes('RS256'));
      });
    });
  }
}

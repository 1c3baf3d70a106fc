import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  authenticationOptions,
  newChallenge,
  registrationOptions,
  type StoredCredential,
  verifyAssertion,
  verifyRegistration,
} from '../../src/factors/webauthn/ceremony.ts';
import { resolveWebAuthnSettings, type WebAuthnSettings, type WebAuthnSettingsInput } from '../../src/factors/webauthn/settings.ts';
import { type AttestationPki, makeAttestationPki } from '../helpers/attestation-ca.ts';
import { hasTool, needTool } from '../helpers/env.ts';
import { SoftCredential } from '../helpers/soft-authenticator.ts';

const RP = 'pay.example.com';
const ORIGIN = 'https://pay.example.com';
const AAGUID = '2fc0579f-8113-47ea-b116-bb5a8db9202a';

const base: WebAuthnSettingsInput = {
  rpId: RP,
  rpName: 'Example Pay',
  origins: [ORIGIN],
  counterRegression: 'refuse',
  attestation: 'none',
  aaguidAllowList: [],
  trustRootsFile: '',
  timeoutSeconds: 120,
};
const settings = resolveWebAuthnSettings(base, 'https://gateway.example.net');

function stored(reg: Awaited<ReturnType<typeof verifyRegistration>>): StoredCredential {
  assert.ok(reg.ok, JSON.stringify(reg));
  return { credentialId: reg.credential.credentialId, publicKey: reg.credential.publicKey, counter: reg.credential.counter, backupEligible: reg.credential.backupEligible, backedUp: reg.credential.backedUp, transports: reg.credential.transports };
}

async function enrolled(options: { counter?: number; backupEligible?: boolean; alg?: -7 | -8 | -257 } = {}) {
  const cred = new SoftCredential(options);
  const challenge = newChallenge();
  const reg = await verifyRegistration(settings, { response: cred.register({ challenge, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge });
  return { cred, stored: stored(reg) };
}

describe('webauthn settings', () => {
  it('defaults the RP ID and origin to the public URL', () => {
    const s = resolveWebAuthnSettings({ ...base, rpId: '', origins: [] }, 'https://auth.example.com:8443/base');
    assert.equal(s.rpId, 'auth.example.com');
    assert.deepEqual(s.origins, ['https://auth.example.com:8443']);
    assert.equal(s.unavailable, undefined);
  });
  it('refuses origins that are not exact, not secure, or not under the RP ID', () => {
    for (const origins of [['https://pay.example.com/'], ['http://pay.example.com'], ['https://evil.example.org'], ['https://pay.example.com.evil.org'], ['not a url']]) {
      assert.throws(() => resolveWebAuthnSettings({ ...base, origins }, ORIGIN), TypeError, origins[0]);
    }
    assert.throws(() => resolveWebAuthnSettings({ ...base, rpId: 'https://pay.example.com' }, ORIGIN), /webauthn\.rpId/);
    // A subdomain origin is fine (credentials are scoped to the registrable RP ID).
    assert.deepEqual(resolveWebAuthnSettings({ ...base, origins: ['https://m.pay.example.com'] }, ORIGIN).origins, ['https://m.pay.example.com']);
    assert.deepEqual(resolveWebAuthnSettings({ ...base, rpId: 'localhost', origins: ['http://localhost:3000'] }, ORIGIN).origins, ['http://localhost:3000']);
  });
  it('an unconfigured section on a public URL that cannot host WebAuthn marks it unavailable instead of failing the start', () => {
    const s = resolveWebAuthnSettings({ ...base, rpId: '', origins: [] }, 'http://192.168.1.10:8080');
    assert.match(s.unavailable ?? '', /webauthn/);
  });
  it('direct attestation needs an allow-list and a readable trust-root file', () => {
    assert.throws(() => resolveWebAuthnSettings({ ...base, attestation: 'direct', trustRootsFile: '/nonexistent' }, ORIGIN), /aaguidAllowList/);
    assert.throws(() => resolveWebAuthnSettings({ ...base, attestation: 'direct', aaguidAllowList: [AAGUID] }, ORIGIN), /trustRootsFile/);
    assert.throws(() => resolveWebAuthnSettings({ ...base, attestation: 'direct', aaguidAllowList: [AAGUID], trustRootsFile: '/nonexistent' }, ORIGIN), /cannot be read/);
    assert.throws(() => resolveWebAuthnSettings({ ...base, attestation: 'direct', aaguidAllowList: ['nope'], trustRootsFile: '/nonexistent' }, ORIGIN), /aaguidAllowList\.0/);
  });
});

describe('webauthn options', () => {
  it('registration: UV required, resident key preferred, our algorithms, exclusions, attestation none', async () => {
    const challenge = newChallenge();
    assert.ok(Buffer.from(challenge, 'base64url').length >= 16);
    const o = await registrationOptions(settings, { userHandle: Buffer.from('usr_1'), userName: 'alice', userDisplayName: 'Alice', challenge, exclude: [{ credentialId: 'AAAA', transports: ['internal', 'bogus'] }] });
    assert.equal(o.challenge, challenge);
    assert.deepEqual(o.rp, { name: 'Example Pay', id: RP });
    assert.equal(o.authenticatorSelection?.userVerification, 'required');
    assert.equal(o.authenticatorSelection?.residentKey, 'preferred');
    assert.deepEqual(o.pubKeyCredParams.map((p) => p.alg), [-8, -7, -257]);
    assert.deepEqual(o.excludeCredentials, [{ id: 'AAAA', transports: ['internal'], type: 'public-key' }]);
    assert.equal(o.attestation, 'none');
    assert.equal(o.timeout, 120000);
  });
  it('authentication: UV required, allow list, or none at all for discoverable credentials', async () => {
    const challenge = newChallenge();
    const o = await authenticationOptions(settings, { challenge, allow: [{ credentialId: 'AAAA', transports: ['usb'] }] });
    assert.equal(o.userVerification, 'required');
    assert.equal(o.rpId, RP);
    assert.deepEqual(o.allowCredentials, [{ id: 'AAAA', transports: ['usb'], type: 'public-key' }]);
    const d = await authenticationOptions(settings, { challenge, allow: [] });
    assert.equal(d.allowCredentials, undefined);
  });
});

describe('webauthn registration outcomes', () => {
  it('accepts a good response for every supported algorithm and reports the credential', async () => {
    for (const alg of [-7, -8, -257] as const) {
      const cred = new SoftCredential({ alg, counter: 3 });
      const challenge = newChallenge();
      const r = await verifyRegistration(settings, { response: cred.register({ challenge, origin: ORIGIN, rpId: RP, aaguid: AAGUID, transports: ['internal', 'hybrid'] }), expectedChallenge: challenge });
      assert.ok(r.ok, `${alg}: ${JSON.stringify(r)}`);
      assert.equal(r.credential.credentialId, cred.credentialId);
      assert.equal(r.credential.algorithm, alg);
      assert.equal(r.credential.counter, 3);
      assert.equal(r.credential.aaguid, AAGUID);
      assert.equal(r.credential.backupEligible, false);
      assert.equal(r.credential.attested, false);
      assert.deepEqual(r.credential.transports, ['internal', 'hybrid']);
    }
  });

  const cases: [string, (c: SoftCredential, challenge: string) => unknown, string, string?][] = [
    ['wrong origin', (c, ch) => c.register({ challenge: ch, origin: 'https://evil.example.org', rpId: RP }), 'origin_mismatch'],
    ['origin with another port', (c, ch) => c.register({ challenge: ch, origin: 'https://pay.example.com:8443', rpId: RP }), 'origin_mismatch'],
    ['origin over http', (c, ch) => c.register({ challenge: ch, origin: 'http://pay.example.com', rpId: RP }), 'origin_mismatch'],
    ['wrong RP ID', (c, ch) => c.register({ challenge: ch, origin: ORIGIN, rpId: 'example.com' }), 'rp_id_mismatch'],
    ['another challenge', (c) => c.register({ challenge: newChallenge(), origin: ORIGIN, rpId: RP }), 'challenge_mismatch'],
    ['wrong type', (c, ch) => c.register({ challenge: ch, origin: ORIGIN, rpId: RP, type: 'webauthn.get' }), 'wrong_type'],
    ['UP=0', (c, ch) => c.register({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { up: false } }), 'user_not_present'],
    ['UV=0', (c, ch) => c.register({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { uv: false } }), 'user_not_verified'],
    ['BS=1 with BE=0', (c, ch) => c.register({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { be: false, bs: true } }), 'backup_state_invalid'],
    ['not an object', () => 'hello', 'malformed'],
    ['missing attestationObject', (c, ch) => ({ ...(c.register({ challenge: ch, origin: ORIGIN, rpId: RP }) as object), response: { clientDataJSON: 'e30' } }), 'malformed'],
    ['id differs from rawId', (c, ch) => ({ ...(c.register({ challenge: ch, origin: ORIGIN, rpId: RP }) as object), rawId: 'AAAA' }), 'malformed'],
    ['garbage attestation object', (c, ch) => {
      const r = c.register({ challenge: ch, origin: ORIGIN, rpId: RP }) as { response: Record<string, string> };
      return { ...r, response: { ...r.response, attestationObject: 'AAAAAAAA' } };
    }, 'malformed'],
    ['response id not the attested credential', (c, ch) => ({ ...(c.register({ challenge: ch, origin: ORIGIN, rpId: RP }) as object), id: 'AAAA', rawId: 'AAAA' }), 'credential_mismatch'],
  ];
  for (const [name, make, reason] of cases) {
    it(`refuses: ${name} → ${reason}`, async () => {
      const cred = new SoftCredential();
      const challenge = newChallenge();
      const r = await verifyRegistration(settings, { response: make(cred, challenge), expectedChallenge: challenge });
      assert.deepEqual(r, { ok: false, reason });
    });
  }
  it('refuses a key algorithm we do not offer (ES384)', async () => {
    const cred = new SoftCredential({ alg: -35 as never });
    const challenge = newChallenge();
    assert.deepEqual(await verifyRegistration(settings, { response: cred.register({ challenge, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge }), { ok: false, reason: 'algorithm_not_allowed' });
  });
  it('refuses when no challenge is live (empty expected challenge)', async () => {
    const cred = new SoftCredential();
    assert.deepEqual(await verifyRegistration(settings, { response: cred.register({ challenge: '', origin: ORIGIN, rpId: RP }), expectedChallenge: '' }), { ok: false, reason: 'challenge_mismatch' });
  });
  it('under attestation none, a self attestation is verified but the credential is not "attested"', async () => {
    const cred = new SoftCredential();
    const challenge = newChallenge();
    const r = await verifyRegistration(settings, { response: cred.register({ challenge, origin: ORIGIN, rpId: RP, format: 'packed-self' }), expectedChallenge: challenge });
    assert.ok(r.ok);
    assert.equal(r.credential.attestationFormat, 'packed');
    assert.equal(r.credential.attested, false);
  });
  it('an attestation statement whose signature is wrong is refused', async () => {
    const cred = new SoftCredential();
    const challenge = newChallenge();
    const good = cred.register({ challenge, origin: ORIGIN, rpId: RP, format: 'packed-self' }) as { response: Record<string, string> };
    const r1 = await verifyRegistration(settings, { response: good, expectedChallenge: challenge });
    assert.ok(r1.ok);
    // Flip a byte of the attestation signature inside the CBOR: the last bytes of attStmt.sig precede authData.
    const att = Buffer.from(good.response.attestationObject!, 'base64url');
    const at = att.indexOf(Buffer.from('authData'));
    att[at - 3] = (att[at - 3] ?? 0) ^ 0x01;
    const r2 = await verifyRegistration(settings, { response: { ...good, response: { ...good.response, attestationObject: att.toString('base64url') } }, expectedChallenge: challenge });
    assert.deepEqual(r2, { ok: false, reason: 'attestation_invalid' });
  });
});

describe('webauthn attestation policy (direct)', () => {
  let pki: AttestationPki | undefined;
  let strangers: AttestationPki | undefined;
  let direct: WebAuthnSettings;
  before(() => {
    if (!hasTool('openssl')) return;
    pki = makeAttestationPki(AAGUID, 'Trusted');
    strangers = makeAttestationPki(AAGUID, 'Stranger');
    direct = resolveWebAuthnSettings({ ...base, attestation: 'direct', aaguidAllowList: [AAGUID.toUpperCase()], trustRootsFile: pki.rootsFile }, ORIGIN);
  });
  after(() => {
    for (const p of [pki, strangers]) if (p !== undefined) rmSync(p.dir, { recursive: true, force: true });
  });

  async function register(o: { aaguid?: string; format?: 'none' | 'packed-self' | 'packed-x5c'; from?: 'trusted' | 'stranger' }) {
    const cred = new SoftCredential();
    const challenge = newChallenge();
    const issuer = o.from === 'stranger' ? strangers! : pki!;
    return verifyRegistration(direct, {
      response: cred.register({ challenge, origin: ORIGIN, rpId: RP, aaguid: o.aaguid ?? AAGUID, format: o.format ?? 'packed-x5c', attestation: { privateKey: issuer.leafKey, alg: -7, chain: issuer.chain } }),
      expectedChallenge: challenge,
    });
  }

  it('the options ask for direct attestation', async (t) => {
    if (needTool(t, 'openssl', 'openssl')) return;
    assert.equal((await registrationOptions(direct, { userHandle: Buffer.from('u'), userName: 'a', userDisplayName: 'a', challenge: newChallenge(), exclude: [] })).attestation, 'direct');
  });
  it('accepts an allowed AAGUID whose certificate chains to a configured root', async (t) => {
    if (needTool(t, 'openssl', 'openssl')) return;
    const r = await register({});
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.credential.attested, true);
    assert.equal(r.credential.aaguid, AAGUID);
  });
  it('refuses none and self attestation', async (t) => {
    if (needTool(t, 'openssl', 'openssl')) return;
    assert.deepEqual(await register({ format: 'none' }), { ok: false, reason: 'attestation_missing' });
    assert.deepEqual(await register({ format: 'packed-self' }), { ok: false, reason: 'attestation_missing' });
  });
  it('refuses an AAGUID that is not on the allow-list', async (t) => {
    if (needTool(t, 'openssl', 'openssl')) return;
    assert.deepEqual(await register({ aaguid: '00000000-0000-0000-0000-000000000000' }), { ok: false, reason: 'aaguid_not_allowed' });
  });
  it('refuses a chain that ends in a root we do not trust', async (t) => {
    if (needTool(t, 'openssl', 'openssl')) return;
    assert.deepEqual(await register({ from: 'stranger' }), { ok: false, reason: 'attestation_untrusted' });
  });
  it('a roots file without certificates stops the start', (t) => {
    if (needTool(t, 'openssl', 'openssl')) return;
    const empty = join(pki!.dir, 'empty.pem');
    writeFileSync(empty, 'nothing here');
    assert.throws(() => resolveWebAuthnSettings({ ...base, attestation: 'direct', aaguidAllowList: [AAGUID], trustRootsFile: empty }, ORIGIN), /no PEM certificate/);
  });
});

describe('webauthn assertion outcomes', () => {
  it('accepts a good assertion and reports counter and backup state', async () => {
    const { cred, stored: s } = await enrolled({ counter: 5 });
    const challenge = newChallenge();
    const r = await verifyAssertion(settings, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, userHandle: 'dXNyXzE' }), expectedChallenge: challenge, credential: s });
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.newCounter, 6);
    assert.equal(r.counterRegressed, false);
    assert.equal(r.backupEligible, false);
    assert.equal(r.userHandle, 'dXNyXzE');
  });
  it('accepts every supported algorithm', async () => {
    for (const alg of [-7, -8, -257] as const) {
      const { cred, stored: s } = await enrolled({ alg });
      const challenge = newChallenge();
      const r = await verifyAssertion(settings, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge, credential: s });
      assert.ok(r.ok, `${alg}: ${JSON.stringify(r)}`);
    }
  });
  it('a synced passkey (BE=1) may change its backup state; zero counters are "no counter"', async () => {
    const { cred, stored: s } = await enrolled({ backupEligible: true });
    assert.equal(s.backupEligible, true);
    for (const bs of [false, true, true]) {
      const challenge = newChallenge();
      const r = await verifyAssertion(settings, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, flags: { bs } }), expectedChallenge: challenge, credential: s });
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.backedUp, bs);
      assert.equal(r.newCounter, 0);
      assert.equal(r.counterRegressed, false);
    }
  });

  const refusals: [string, (c: SoftCredential, challenge: string) => unknown, string][] = [
    ['wrong origin', (c, ch) => c.assert({ challenge: ch, origin: 'https://evil.example.org', rpId: RP }), 'origin_mismatch'],
    ['origin with a trailing slash', (c, ch) => c.assert({ challenge: ch, origin: `${ORIGIN}/`, rpId: RP }), 'origin_mismatch'],
    ['wrong RP ID', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: 'evil.example.org' }), 'rp_id_mismatch'],
    ['UP=0', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { up: false } }), 'user_not_present'],
    ['UV=0', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { uv: false } }), 'user_not_verified'],
    ['BS=1 with BE=0', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { bs: true } }), 'backup_state_invalid'],
    ['BE now claimed by a device-bound credential', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { be: true } }), 'backup_eligibility_changed'],
    ['another challenge', (c) => c.assert({ challenge: newChallenge(), origin: ORIGIN, rpId: RP }), 'challenge_mismatch'],
    ['a registration response type', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, type: 'webauthn.create' }), 'wrong_type'],
    ['made in a cross-origin iframe', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, clientDataExtra: { crossOrigin: true, topOrigin: 'https://evil.example.org' } }), 'cross_origin'],
    ['a bad signature', (c, ch) => c.assert({ challenge: ch, origin: ORIGIN, rpId: RP, badSignature: true }), 'signature_invalid'],
    ['garbage', () => ({ id: 'x' }), 'malformed'],
    ['undecodable authenticator data', (c, ch) => {
      const r = c.assert({ challenge: ch, origin: ORIGIN, rpId: RP }) as { response: Record<string, string> };
      return { ...r, response: { ...r.response, authenticatorData: 'AAAA' } };
    }, 'malformed'],
    ['undecodable clientDataJSON', (c, ch) => {
      const r = c.assert({ challenge: ch, origin: ORIGIN, rpId: RP }) as { response: Record<string, string> };
      return { ...r, response: { ...r.response, clientDataJSON: 'AAAA' } };
    }, 'malformed'],
  ];
  for (const [name, make, reason] of refusals) {
    it(`refuses: ${name} → ${reason}`, async () => {
      const { cred, stored: s } = await enrolled();
      const challenge = newChallenge();
      assert.deepEqual(await verifyAssertion(settings, { response: make(cred, challenge), expectedChallenge: challenge, credential: s }), { ok: false, reason });
    });
  }

  it('refuses an assertion by another credential (another user’s key) checked against this one', async () => {
    const mine = await enrolled();
    const theirs = await enrolled();
    const challenge = newChallenge();
    const response = theirs.cred.assert({ challenge, origin: ORIGIN, rpId: RP });
    assert.deepEqual(await verifyAssertion(settings, { response, expectedChallenge: challenge, credential: mine.stored }), { ok: false, reason: 'credential_mismatch' });
    // Their signature presented under my credential id: the key does not match.
    const relabelled = { ...response, id: mine.cred.credentialId, rawId: mine.cred.credentialId };
    assert.deepEqual(await verifyAssertion(settings, { response: relabelled, expectedChallenge: challenge, credential: mine.stored }), { ok: false, reason: 'signature_invalid' });
  });

  it('a counter that does not grow is refused under refuse, and accepted-but-flagged under flag-only', async () => {
    const { cred, stored: s } = await enrolled({ counter: 10 });
    const current = { ...s, counter: 10 };
    for (const counter of [10, 9, 0]) {
      const challenge = newChallenge();
      const r = await verifyAssertion(settings, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter }), expectedChallenge: challenge, credential: current });
      assert.deepEqual(r, { ok: false, reason: 'counter_regressed', counter: { stored: 10, presented: counter } });
    }
    const flagOnly = { ...settings, counterRegression: 'flag-only' as const };
    const challenge = newChallenge();
    const r = await verifyAssertion(flagOnly, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter: 7 }), expectedChallenge: challenge, credential: current });
    assert.ok(r.ok);
    assert.equal(r.counterRegressed, true);
    assert.equal(r.newCounter, 7);
    // A forged response can never flag a credential: the signature is checked first.
    const forged = await verifyAssertion(flagOnly, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter: 1, badSignature: true }), expectedChallenge: challenge, credential: current });
    assert.deepEqual(forged, { ok: false, reason: 'signature_invalid' });
  });

  it('a counter that starts at zero and then moves is fine; one that goes back to zero is not', async () => {
    const { cred, stored: s } = await enrolled();
    let challenge = newChallenge();
    const r = await verifyAssertion(settings, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter: 1 }), expectedChallenge: challenge, credential: s });
    assert.ok(r.ok);
    challenge = newChallenge();
    const back = await verifyAssertion(settings, { response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter: 0 }), expectedChallenge: challenge, credential: { ...s, counter: 1 } });
    assert.deepEqual(back, { ok: false, reason: 'counter_regressed', counter: { stored: 1, presented: 0 } });
  });
});

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { AssertionKeyCache, assertionKeyFromCose } from '../../src/factors/webauthn/assertion-keys.ts';
import {
  type AssertionOutcome,
  assertionKeys,
  isCanonicalDerEcdsaSignature,
  loadWebAuthnLibrary,
  newChallenge,
  type StoredCredential,
  type VerifyAssertionInput,
  verifyAssertion,
  verifyAssertionWithLibrary,
  verifyRegistration,
} from '../../src/factors/webauthn/ceremony.ts';
import { resolveWebAuthnSettings, type WebAuthnSettings } from '../../src/factors/webauthn/settings.ts';
import { type Alg, type AssertOptions, type Cbor, cbor, SoftCredential, softKey } from '../helpers/soft-authenticator.ts';

/**
 * verifyAssertion checks signatures with cached node:crypto KeyObjects; the library path
 * (verifyAssertionWithLibrary: @simplewebauthn/server imports the key and verifies, after
 * the same typed checks) is the reference. Every case here runs both and requires the same
 * outcome, reason and all, and for tampered responses a refusal.
 */

const RP = 'pay.example.com';
const ORIGIN = 'https://pay.example.com';
const settings = resolveWebAuthnSettings(
  { rpId: RP, rpName: 'Example Pay', origins: [ORIGIN], counterRegression: 'refuse', attestation: 'none', aaguidAllowList: [], trustRootsFile: '', timeoutSeconds: 120 },
  ORIGIN,
);
const flagOnly: WebAuthnSettings = { ...settings, counterRegression: 'flag-only' };
// Seeded like the fuzz suite: reproducible in the normal run, fresh under test:chaos.
const RUNS = Number(process.env.STEPGATE_FUZZ_RUNS ?? '2') * 25;
const SEED =
  process.env.STEPGATE_FUZZ_SEED !== undefined ? { seed: Number(process.env.STEPGATE_FUZZ_SEED) } : process.env.STEPGATE_FUZZ_RUNS === undefined ? { seed: 20261202 } : {};

async function enrolled(alg: Alg = -7, options: { counter?: number; backupEligible?: boolean } = {}): Promise<{ cred: SoftCredential; stored: StoredCredential }> {
  const cred = new SoftCredential({ alg, ...options });
  const challenge = newChallenge();
  const reg = await verifyRegistration(settings, { response: cred.register({ challenge, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge });
  assert.ok(reg.ok, JSON.stringify(reg));
  const c = reg.credential;
  return { cred, stored: { credentialId: c.credentialId, publicKey: c.publicKey, counter: c.counter, backupEligible: c.backupEligible, backedUp: c.backedUp, transports: c.transports } };
}

/** Both verifiers on the same input; they must agree exactly. */
async function both(input: VerifyAssertionInput, s: WebAuthnSettings = settings): Promise<AssertionOutcome> {
  const fast = await verifyAssertion(s, input);
  const reference = await verifyAssertionWithLibrary(s, input);
  assert.deepEqual(fast, reference, `fast path and library disagree: ${JSON.stringify({ fast, reference })}`);
  return fast;
}

type Response = { id: string; rawId: string; response: Record<string, string> };

function withMember(response: unknown, member: string, edit: (b: Buffer) => Buffer): Response {
  const copy = structuredClone(response) as Response;
  copy.response[member] = edit(Buffer.from(copy.response[member]!, 'base64url')).toString('base64url');
  return copy;
}

/** An edit that XORs one byte (a negative index counts from the end). */
function flip(at: number, mask: number): (b: Buffer) => Buffer {
  return (b) => {
    const i = at < 0 ? b.length + at : at;
    b[i] = b[i]! ^ mask;
    return b;
  };
}

const ALGS: Alg[] = [-7, -8, -257];
const KIND: Record<number, string> = { [-7]: 'es256', [-8]: 'ed25519', [-257]: 'rs256' };

describe('webauthn assertion: cached KeyObject verifier vs @simplewebauthn/server', () => {
  for (const alg of ALGS) {
    it(`alg ${alg}: a valid assertion is accepted by both with the same outcome`, async () => {
      const { cred, stored } = await enrolled(alg, { counter: 4 });
      const challenge = newChallenge();
      const r = await both({ response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, userHandle: 'dXNyXzE' }), expectedChallenge: challenge, credential: stored });
      assert.ok(r.ok);
      assert.equal(r.newCounter, 5);
      assert.equal(r.userHandle, 'dXNyXzE');
      // ...and it was the KeyObject path, not the library fallback.
      const { helpers } = await loadWebAuthnLibrary();
      const key = assertionKeys.get(stored.publicKey, helpers.decodeCredentialPublicKey);
      assert.notEqual(key, 'unsupported');
      assert.equal((key as { kind: string }).kind, KIND[alg]);
    });

    it(`alg ${alg}: every tampering is refused by both, for the same reason`, async () => {
      const { cred, stored } = await enrolled(alg, { counter: 10 });
      const other = await enrolled(alg);
      const cases: [string, (challenge: string) => unknown, string, StoredCredential?][] = [
        ['wrong challenge', () => cred.assert({ challenge: newChallenge(), origin: ORIGIN, rpId: RP }), 'challenge_mismatch'],
        ['wrong origin', (ch) => cred.assert({ challenge: ch, origin: 'https://evil.example.org', rpId: RP }), 'origin_mismatch'],
        ['a subdomain origin not configured', (ch) => cred.assert({ challenge: ch, origin: 'https://m.pay.example.com', rpId: RP }), 'origin_mismatch'],
        ['wrong rpIdHash', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: 'example.com' }), 'rp_id_mismatch'],
        ['wrong type', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, type: 'webauthn.create' }), 'wrong_type'],
        ['UP cleared', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { up: false } }), 'user_not_present'],
        ['UV cleared', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { uv: false } }), 'user_not_verified'],
        ['crossOrigin', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, clientDataExtra: { crossOrigin: true } }), 'cross_origin'],
        ['topOrigin', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, clientDataExtra: { topOrigin: ORIGIN } }), 'cross_origin'],
        ['a malformed tokenBinding', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, clientDataExtra: { tokenBinding: { status: 'bogus' } } }), 'malformed'],
        ['a tokenBinding that is not an object', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, clientDataExtra: { tokenBinding: 'present' } }), 'malformed'],
        ['BE claimed', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, flags: { be: true, bs: true } }), 'backup_eligibility_changed'],
        ['a bad signature', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, badSignature: true }), 'signature_invalid'],
        ['the first signature byte flipped', (ch) => withMember(cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), 'signature', flip(0, 0x01)), 'signature_invalid'],
        ['the last signature byte flipped', (ch) => withMember(cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), 'signature', flip(-1, 0x80)), 'signature_invalid'],
        ['a truncated signature', (ch) => withMember(cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), 'signature', (b) => b.subarray(0, b.length - 1)), 'signature_invalid'],
        ['a signed counter byte changed after signing', (ch) => withMember(cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), 'authenticatorData', flip(36, 0x01)), 'signature_invalid'],
        ['clientDataJSON re-serialised (other bytes, same meaning)', (ch) => withMember(cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), 'clientDataJSON', (b) => Buffer.from(JSON.stringify(JSON.parse(b.toString()), null, 1))), 'signature_invalid'],
        ['a counter that did not grow', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, counter: 10 }), 'counter_regressed'],
        ['a counter back to zero', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, counter: 0 }), 'counter_regressed'],
        ['another credential’s assertion', (ch) => other.cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), 'credential_mismatch'],
        ['another credential’s signature under this id', (ch) => ({ ...other.cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP }), id: cred.credentialId, rawId: cred.credentialId }), 'signature_invalid'],
        ['this assertion checked against another credential’s key', (ch) => cred.assert({ challenge: ch, origin: ORIGIN, rpId: RP, counter: 11 }), 'signature_invalid', { ...other.stored, credentialId: stored.credentialId }],
      ];
      for (const [name, make, reason, against] of cases) {
        const challenge = newChallenge();
        const r = await both({ response: make(challenge), expectedChallenge: challenge, credential: { ...(against ?? stored), counter: 10 } });
        assert.equal(r.ok, false, name);
        assert.equal((r as { reason: string }).reason, reason, name);
      }
    });

    it(`alg ${alg}: counter regression under flag-only is accepted and flagged by both, never for an unsigned response`, async () => {
      const { cred, stored } = await enrolled(alg, { counter: 10 });
      const current = { ...stored, counter: 10 };
      let challenge = newChallenge();
      const r = await both({ response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter: 7 }), expectedChallenge: challenge, credential: current }, flagOnly);
      assert.ok(r.ok);
      assert.equal(r.counterRegressed, true);
      challenge = newChallenge();
      const forged = await both({ response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, counter: 7, badSignature: true }), expectedChallenge: challenge, credential: current }, flagOnly);
      assert.deepEqual(forged, { ok: false, reason: 'signature_invalid' });
    });
  }

  it('a well-formed tokenBinding is accepted by both (older browsers sent one)', async () => {
    const { cred, stored } = await enrolled();
    for (const tokenBinding of [{ status: 'supported' }, { status: 'present', id: 'AAAA' }, null, false]) {
      const challenge = newChallenge();
      const r = await both({ response: cred.assert({ challenge, origin: ORIGIN, rpId: RP, clientDataExtra: { tokenBinding } }), expectedChallenge: challenge, credential: stored });
      assert.ok(r.ok, JSON.stringify(tokenBinding));
    }
  });

  it('an ES256 signature is accepted only in its canonical DER encoding (the check the wrapper had stays)', async () => {
    const { cred, stored } = await enrolled(-7);
    const challenge = newChallenge();
    const response = cred.assert({ challenge, origin: ORIGIN, rpId: RP }) as Response;
    const sig = Buffer.from(response.response.signature!, 'base64url');
    const variants = [Buffer.concat([Buffer.from([0xb0]), sig.subarray(1)]), Buffer.concat([sig, Buffer.from([0])]), Buffer.concat([Buffer.from([0x30, 0x81, sig.length - 2]), sig.subarray(2)])];
    for (const v of variants) {
      assert.equal(isCanonicalDerEcdsaSignature(v), false);
      const edited = withMember(response, 'signature', () => v);
      assert.deepEqual(await both({ response: edited, expectedChallenge: challenge, credential: stored }), { ok: false, reason: 'signature_invalid' }, v.toString('hex'));
    }
    assert.ok((await both({ response, expectedChallenge: challenge, credential: stored })).ok);
  });

  it('property: one byte of any member changed, or a member replaced: both refuse, with the same reason', async () => {
    const creds = await Promise.all(ALGS.map((alg) => enrolled(alg, { counter: 1 })));
    const edit = fc.record({
      which: fc.nat({ max: creds.length - 1 }),
      member: fc.constantFrom('clientDataJSON', 'authenticatorData', 'signature', 'userHandle'),
      at: fc.nat(),
      xor: fc.integer({ min: 1, max: 255 }),
      replace: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(edit, async (e) => {
        const { cred, stored } = creds[e.which]!;
        const challenge = newChallenge();
        const response = cred.assert({ challenge, origin: ORIGIN, rpId: RP, userHandle: 'dXNyXzE' });
        const edited = withMember(response, e.member, (b) => {
          if (e.replace) return Buffer.alloc(b.length, e.xor);
          b[e.at % b.length] = b[e.at % b.length]! ^ e.xor;
          return b;
        });
        const r = await both({ response: edited, expectedChallenge: challenge, credential: stored });
        // The user handle is not signed: a changed one is the flow's to check (user_handle_mismatch).
        if (e.member !== 'userHandle') assert.equal(r.ok, false, `edited ${e.member} accepted`);
        assert.ok((await both({ response, expectedChallenge: challenge, credential: stored })).ok);
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
  });

  it('property: any flags byte and counter: both agree', async () => {
    const { cred, stored } = await enrolled(-7, { counter: 50, backupEligible: true });
    await fc.assert(
      fc.asyncProperty(fc.record({ up: fc.boolean(), uv: fc.boolean(), be: fc.boolean(), bs: fc.boolean() }), fc.nat({ max: 100 }), fc.constantFrom(settings, flagOnly), async (flags, counter, s) => {
        const challenge = newChallenge();
        const a: AssertOptions = { challenge, origin: ORIGIN, rpId: RP, flags, counter };
        await both({ response: cred.assert(a), expectedChallenge: challenge, credential: { ...stored, counter: 50 } }, s);
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
  });
});

describe('webauthn assertion key cache', () => {
  it('a credential registered again under the same id with a new key: each key verifies only its own assertions, whatever is cached', async () => {
    const first = await enrolled(-7, { counter: 1 });
    // Same credential id, new key pair (an authenticator reset, a re-registration).
    const again = new SoftCredential({ counter: 1 });
    Object.defineProperty(again, 'id', { value: first.cred.id });
    const challenge0 = newChallenge();
    const reg = await verifyRegistration(settings, { response: again.register({ challenge: challenge0, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge0 });
    assert.ok(reg.ok);
    assert.equal(reg.credential.credentialId, first.stored.credentialId);
    assert.notEqual(reg.credential.publicKey, first.stored.publicKey);
    const oldStored = first.stored;
    const newStored: StoredCredential = { ...first.stored, publicKey: reg.credential.publicKey };
    for (let round = 0; round < 2; round++) {
      // Round 0 fills the cache with both keys, round 1 runs on cache hits.
      for (const [signer, storedKey, ok] of [
        [first.cred, oldStored, true],
        [again, newStored, true],
        [first.cred, newStored, false],
        [again, oldStored, false],
      ] as const) {
        const challenge = newChallenge();
        const r = await both({ response: signer.assert({ challenge, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge, credential: storedKey });
        assert.equal(r.ok, ok, JSON.stringify(r));
        if (!r.ok) assert.equal(r.reason, 'signature_invalid');
      }
    }
  });

  it('is bounded: the least recently used key is the one dropped, and a dropped key is made again on its next use', async () => {
    const { helpers } = await loadWebAuthnLibrary();
    let decoded = 0;
    const decode = (b: Uint8Array<ArrayBuffer>) => {
      decoded += 1;
      return helpers.decodeCredentialPublicKey(b);
    };
    const cache = new AssertionKeyCache(3);
    const keys = ALGS.concat([-7, -8]).map((alg) => softKey(alg).cose.toString('base64url'));
    for (const k of keys.slice(0, 3)) assert.notEqual(cache.get(k, decode), 'unsupported');
    assert.equal(decoded, 3);
    const hit = cache.get(keys[0]!, decode);
    assert.equal(decoded, 3, 'a hit does not decode again');
    assert.equal(cache.get(keys[0]!, decode), hit, 'the same KeyObject');
    cache.get(keys[3]!, decode); // evicts keys[1], the least recently used
    cache.get(keys[4]!, decode); // evicts keys[2]
    assert.equal(cache.size, 3);
    assert.equal(decoded, 5);
    cache.get(keys[0]!, decode);
    assert.equal(decoded, 5, 'the recently used key stayed');
    cache.get(keys[1]!, decode);
    assert.equal(decoded, 6, 'an evicted key is made again');
    assert.equal(cache.size, 3);
    assert.throws(() => new AssertionKeyCache(0), TypeError);
  });

  it('the process-wide cache stays within its bound', () => {
    assert.ok(assertionKeys.size <= assertionKeys.maxEntries);
    assert.ok(assertionKeys.maxEntries >= 1);
  });

  it('keys of other shapes are not made here; such credentials still verify exactly as the library does', async () => {
    const { helpers } = await loadWebAuthnLibrary();
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const x = Buffer.from(p256.x!, 'base64url');
    const y = Buffer.from(p256.y!, 'base64url');
    const offCurve = Buffer.from(y);
    offCurve[31] = offCurve[31]! ^ 0x01;
    const shapes: [string, Map<Cbor, Cbor>][] = [
      ['ES384', new Map<Cbor, Cbor>([[1, 2], [3, -35], [-1, 2], [-2, Buffer.from(p384.x!, 'base64url')], [-3, Buffer.from(p384.y!, 'base64url')]])],
      ['P-256 key labelled ES384', new Map<Cbor, Cbor>([[1, 2], [3, -35], [-1, 1], [-2, x], [-3, y]])],
      ['P-256 key with alg -257', new Map<Cbor, Cbor>([[1, 2], [3, -257], [-1, 1], [-2, x], [-3, y]])],
      ['a point off the curve', new Map<Cbor, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, x], [-3, offCurve]])],
      ['x too short', new Map<Cbor, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, x.subarray(1)], [-3, y]])],
      ['no y', new Map<Cbor, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, x]])],
      ['OKP with X25519', new Map<Cbor, Cbor>([[1, 1], [3, -8], [-1, 4], [-2, x]])],
      ['RSA without e', new Map<Cbor, Cbor>([[1, 3], [3, -257], [-1, x]])],
      ['RSA-PSS', new Map<Cbor, Cbor>([[1, 3], [3, -37], [-1, x], [-2, Buffer.from([1, 0, 1])]])],
    ];
    for (const [name, cose] of shapes) {
      assert.equal(assertionKeyFromCose(helpers.decodeCredentialPublicKey(new Uint8Array(cbor(cose)))), undefined, name);
      assert.equal(new AssertionKeyCache().get(cbor(cose).toString('base64url'), helpers.decodeCredentialPublicKey), 'unsupported', name);
    }
    assert.equal(new AssertionKeyCache().get('AAAA', helpers.decodeCredentialPublicKey), 'unsupported', 'undecodable');
    // An ES384 credential stored anyway (it is refused at registration) takes the library path.
    const es384 = new SoftCredential({ alg: -35, counter: 1 });
    const stored: StoredCredential = { credentialId: es384.credentialId, publicKey: es384.key.cose.toString('base64url'), counter: 1, backupEligible: false, backedUp: false, transports: [] };
    let challenge = newChallenge();
    assert.ok((await both({ response: es384.assert({ challenge, origin: ORIGIN, rpId: RP }), expectedChallenge: challenge, credential: stored })).ok);
    challenge = newChallenge();
    assert.deepEqual(await both({ response: es384.assert({ challenge, origin: ORIGIN, rpId: RP, badSignature: true }), expectedChallenge: challenge, credential: stored }), { ok: false, reason: 'signature_invalid' });
  });
});

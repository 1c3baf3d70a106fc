import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createLocalJWKSet } from 'jose';
import { FixedClock } from '../../src/clock.ts';
import { isAppError } from '../../src/errors/app-error.ts';
import { isCanonicalDerEcdsaSignature, newChallenge, type StoredCredential, verifyAssertion, verifyRegistration } from '../../src/factors/webauthn/ceremony.ts';
import { resolveWebAuthnSettings } from '../../src/factors/webauthn/settings.ts';
import { readTokenFile, type TokenFile } from '../../src/pskc/index.ts';
import { isStepUpTokenError, MemoryReplayStore, verifyStepUpToken, type StepUpTokenErrorCode } from '../../src/verifier/index.ts';
import { needPskc, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';
import { SoftCredential } from '../helpers/soft-authenticator.ts';
import { b64uJson, signRaw, TEST_ACTION, TEST_AUDIENCE, TEST_CONTEXT, TEST_ISSUER, TEST_SUBJECT, TokenMinter } from '../helpers/token-minter.ts';

/**
 * Property-based fuzzing of the parsers that read attacker-controlled bytes: the PSKC/CSV
 * token-file reader, the step-up token verifier and the WebAuthn response wrapper. Inputs
 * are both random and structure-aware (a valid file, token or response with one part
 * mutated), so the fuzzer gets past the first check. Each must refuse with its own typed
 * error (AppError 4xx, StepUpTokenError, a `{ ok: false, reason }` outcome), never throw
 * anything else, never hang, and never accept what was tampered with.
 *
 * Runs per property: STEPGATE_FUZZ_RUNS × 25 (default 2 × 25 = 50); `npm run test:chaos`
 * runs many more.
 */

const RUNS = Number(process.env.STEPGATE_FUZZ_RUNS ?? '2') * 25;
// Fixed seed in the normal suite (reproducible), a fresh one under `npm run test:chaos`
// (which sets STEPGATE_FUZZ_RUNS); STEPGATE_FUZZ_SEED replays a failure.
const SEED =
  process.env.STEPGATE_FUZZ_SEED !== undefined ? { seed: Number(process.env.STEPGATE_FUZZ_SEED) } : process.env.STEPGATE_FUZZ_RUNS === undefined ? { seed: 20261201 } : {};
const NOW = new Date(Date.UTC(2026, 0, 15, 12));

/** Replaces, deletes or inserts characters at generated positions. */
function mutate(text: string, edits: { at: number; del: number; ins: string }[]): string {
  let s = text;
  for (const e of edits) {
    const at = e.at % (s.length + 1);
    s = s.slice(0, at) + e.ins + s.slice(at + e.del);
  }
  return s;
}
const edits = fc.array(fc.record({ at: fc.nat(), del: fc.nat({ max: 12 }), ins: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('<', '>', '"', '&amp;', '&#0;', '<![CDATA[', ']]>', '<!--', 'xmlns="x"', ',', '\n', '\u0000', '\uFEFF', '=')) }), { minLength: 1, maxLength: 4 });

// ---- token files ---------------------------------------------------------------------------

function readFile(data: Buffer, options: { password?: string; psk?: Buffer } = {}): TokenFile | { refused: string } {
  try {
    return readTokenFile(data, { now: NOW, maxBytes: 1024 * 1024, maxTokens: 100, maxPbkdf2Iterations: 20_000, ...options });
  } catch (err) {
    if (isAppError(err) && err.status >= 400 && err.status < 500) return { refused: err.code };
    throw err;
  }
}

/** What every token a reader returns must be, however odd the file. */
function assertSaneTokens(file: TokenFile | { refused: string }, label: string): void {
  if ('refused' in file) return;
  for (const t of file.tokens) {
    assert.ok(t.serial.length > 0 && t.serial.length <= 128, `${label}: serial ${t.serial}`);
    assert.ok(t.digits >= 6 && t.digits <= 8, `${label}: digits ${t.digits}`);
    assert.ok(t.seed.length >= 16 && t.seed.length <= 128, `${label}: seed length ${t.seed.length}`);
  }
  assert.ok(Array.isArray(file.problems));
}

const CSV_HEADER = 'serial,seed,type,algorithm,digits,counter,period';

describe('fuzzing the token-file readers (src/pskc)', () => {
  it('random bytes and random text: a typed 4xx refusal or a sane result, never a crash', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)), fc.string({ unit: 'binary', maxLength: 2000 }).map((s) => Buffer.from(s, 'utf8'))), (data) => {
        assertSaneTokens(readFile(data), 'random');
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
  });

  it('a mutated CSV file: refused or read row by row, never a crash, never a malformed token', () => {
    const good = `${CSV_HEADER}\nHW-1,${randomSeedHex(20)},hotp,SHA1,6,0,\nHW-2,${randomSeedHex(32)},totp,SHA256,8,,30\n`;
    const cells = fc.array(fc.array(fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('hotp', 'totp', 'SM3', 'SHA1', '6', '8', '-1', '99999999999999999999', `hex:${randomSeedHex(20)}`, 'base32:JBSWY3DPEHPK3PXP', '"a,b"', '"')), { maxLength: 8 }), { maxLength: 6 });
    fc.assert(
      fc.property(fc.oneof(edits.map((e) => mutate(good, e)), cells.map((rows) => [CSV_HEADER, ...rows.map((r) => r.join(','))].join('\n'))), (text) => {
        assertSaneTokens(readFile(Buffer.from(text, 'utf8'), {}), 'csv');
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
  });

  it('mutated PSKC files written by python3-pskc (plain, pre-shared key, PBKDF2): refused or sane; a tampered encrypted value never yields a token', (t) => {
    if (needPskc(t)) return;
    const psk = randomSeedHex(16);
    const password = 'fuzz transport password';
    const tokens = [
      { serial: 'FZ-1', secret_hex: randomSeedHex(20), algorithm: 'hotp', counter: 3 },
      { serial: 'FZ-2', secret_hex: randomSeedHex(32), algorithm: 'totp', suite: 'HMAC-SHA256', digits: 8, time_interval: 30 },
    ];
    const files = {
      none: writePskc({ encryption: 'none', tokens }).toString('utf8'),
      psk: writePskc({ encryption: 'psk', key_hex: psk, tokens }).toString('utf8'),
      pbkdf2: writePskc({ encryption: 'pbkdf2', password, iterations: 1000, tokens }).toString('utf8'),
    };
    const options = { none: {}, psk: { psk: Buffer.from(psk, 'hex') }, pbkdf2: { password } };
    for (const [kind, text] of Object.entries(files) as [keyof typeof files, string][]) {
      const clean = readFile(Buffer.from(text, 'utf8'), options[kind]);
      assert.ok(!('refused' in clean) && clean.tokens.length === 2, `${kind}: the unmutated file reads (${JSON.stringify(clean)})`);
    }
    let tamperedCipherValues = 0;
    fc.assert(
      fc.property(fc.constantFrom('none', 'psk', 'pbkdf2' as const), edits, fc.nat(), (kind, e, which) => {
        const text = files[kind];
        const mutated = mutate(text, e);
        const result = readFile(Buffer.from(mutated, 'utf8'), options[kind]);
        assertSaneTokens(result, kind);
        // Changing one character inside an encrypted seed must never produce a (different) token:
        // the MAC (PSKC ValueMAC) or the padding check refuses it.
        if (kind !== 'none') {
          const values = [...text.matchAll(/<(?:\w+:)?CipherValue>([^<]+)</g)];
          const target = values[which % values.length];
          if (target?.index !== undefined) {
            const start = target.index + target[0].indexOf('>') + 1;
            const pos = start + (which % (target[1] ?? '').length);
            const original = text[pos] ?? 'A';
            const replacement = original === 'A' ? 'B' : 'A';
            const tampered = text.slice(0, pos) + replacement + text.slice(pos + 1);
            // A base64 character next to the padding carries bits the decoder drops: changing
            // only those leaves the ciphertext as it was, which is no tampering at all.
            const valueStart = start;
            const valueEnd = start + (target[1] ?? '').length;
            const sameBytes = Buffer.from(text.slice(valueStart, valueEnd), 'base64').equals(Buffer.from(tampered.slice(valueStart, valueEnd), 'base64'));
            const r = readFile(Buffer.from(tampered, 'utf8'), options[kind]);
            if (!sameBytes) tamperedCipherValues += 1;
            if (!sameBytes && !('refused' in r)) {
              // Whose value was it? The KeyPackage around it names the token; a value before the
              // first KeyPackage is the file's MAC key (PSK), which every token's MAC depends on.
              const packages = [...text.matchAll(/<(?:\w+:)?KeyPackage>/g)].map((m) => m.index ?? 0);
              const inPackage = packages.filter((at) => at < pos).length - 1;
              if (inPackage < 0) {
                assert.equal(r.tokens.length, 0, `${kind}: a tampered MAC key still gave ${r.tokens.map((x) => x.serial).join(', ')}`);
              } else {
                const serial = tokens[inPackage]?.serial ?? '?';
                assert.ok(!r.tokens.some((x) => x.serial === serial), `${kind}: a tampered CipherValue still gave token ${serial}`);
              }
            }
          }
        }
      }),
      { numRuns: RUNS, ...SEED },
    );
    assert.ok(tamperedCipherValues > 0);
  });
});

// ---- step-up tokens ------------------------------------------------------------------------

describe('fuzzing the step-up token verifier (src/verifier)', () => {
  const clock = new FixedClock(NOW.getTime());

  async function setup() {
    const minter = await TokenMinter.create({ now: () => clock.now() });
    const jwks = createLocalJWKSet(minter.jwks());
    const store = new MemoryReplayStore({ clock });
    const verify = async (token: string): Promise<'accepted' | StepUpTokenErrorCode> => {
      try {
        await verifyStepUpToken(token, { issuer: TEST_ISSUER, audience: TEST_AUDIENCE, jwks, expectedSubject: TEST_SUBJECT, expectedAction: TEST_ACTION, expectedContext: { ...TEST_CONTEXT }, replayStore: store, clock });
        return 'accepted';
      } catch (err) {
        if (isStepUpTokenError(err)) return err.code;
        throw err;
      }
    };
    return { minter, verify };
  }

  it('random strings and random three-part tokens are refused with a typed code', async () => {
    const { verify } = await setup();
    const b64 = fc.string({ unit: fc.constantFrom(...'ABCxyz019-_='.split('')), maxLength: 60 });
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.tuple(b64, b64, b64).map((p) => p.join('.')), fc.tuple(fc.jsonValue(), fc.jsonValue(), b64).map(([h, p, s]) => `${b64uJson(h)}.${b64uJson(p)}.${s}`)), async (token) => {
        assert.notEqual(await verify(token), 'accepted');
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
  });

  it('a properly signed token with generated header and claims is accepted only when every claim is right', async (t) => {
    const { minter, verify } = await setup();
    const headerEdit = fc.record(
      {
        alg: fc.constantFrom('ES256', 'none', 'HS256', 'RS256', 'es256', 'EdDSA', ''),
        typ: fc.constantFrom('stepup+jwt', 'JWT', 'application/stepup+jwt', 'STEPUP+JWT', undefined),
        kid: fc.oneof(fc.constant(minter.key.kid), fc.string({ maxLength: 10 })),
        jwk: fc.constant(minter.key.publicJwk),
        crit: fc.constant(['exp']),
      },
      { requiredKeys: [] },
    );
    const claimValue = fc.oneof(fc.jsonValue(), fc.constantFrom(TEST_ISSUER, TEST_AUDIENCE, TEST_SUBJECT, [TEST_AUDIENCE, 'other'], Math.floor(NOW.getTime() / 1000) + 10_000, -1, 'urn:stepgate:aal3', [{ type: TEST_ACTION, ...TEST_CONTEXT, amount: '999.00' }]));
    const claimEdit = fc.dictionary(fc.constantFrom('iss', 'sub', 'aud', 'iat', 'exp', 'nbf', 'jti', 'auth_time', 'acr', 'amr', 'authorization_details', 'txn'), fc.option(claimValue, { nil: undefined }), { maxKeys: 3 });
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(headerEdit, claimEdit, async (h, c) => {
        const { header, claims } = minter.parts();
        const mintedHeader = { ...header, ...h };
        const mintedClaims: Record<string, unknown> = { ...claims };
        for (const [k, v] of Object.entries(c)) {
          if (v === undefined) delete mintedClaims[k];
          else mintedClaims[k] = v;
        }
        const outcome = await verify(signRaw(mintedHeader, mintedClaims, minter.key));
        const untouched = Object.keys(h).every((k) => (mintedHeader as Record<string, unknown>)[k] === (header as Record<string, unknown>)[k]) && Object.keys(c).every((k) => JSON.stringify(mintedClaims[k]) === JSON.stringify(claims[k]));
        if (outcome === 'accepted') {
          accepted += 1;
          assert.ok(untouched, `accepted an edited token: header ${JSON.stringify(h)} claims ${JSON.stringify(c)}`);
        }
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
    t.diagnostic(`${accepted} of ${RUNS * 2} generated tokens were unedited and accepted`);
    // And an unedited token is accepted exactly once (the jti is then spent).
    const token = await minter.mint();
    assert.equal(await verify(token), 'accepted');
    assert.equal(await verify(token), 'replayed');
  });

  it('one changed character anywhere in a valid token: refused', async () => {
    const { minter, verify } = await setup();
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.'.split('')), async (at, ch) => {
        const token = await minter.mint();
        const pos = at % token.length;
        fc.pre(token[pos] !== ch);
        const tampered = token.slice(0, pos) + ch + token.slice(pos + 1);
        const outcome = await verify(tampered);
        // base64url has spare bits: the last character of a segment can change without
        // changing the bytes it decodes to; then the token is the same token.
        if (outcome === 'accepted') {
          const seg = (s: string) => s.split('.').map((p) => Buffer.from(p, 'base64url').toString('hex'));
          assert.deepEqual(seg(tampered), seg(token), `tampered at ${pos} (${token[pos]}→${ch}) and accepted`);
        }
      }),
      { numRuns: RUNS, ...SEED },
    );
  });
});

// ---- WebAuthn responses --------------------------------------------------------------------

describe('fuzzing the WebAuthn wrapper (src/factors/webauthn)', () => {
  const RP = 'pay.example.com';
  const ORIGIN = 'https://pay.example.com';
  const settings = resolveWebAuthnSettings({ rpId: RP, rpName: 'Example Pay', origins: [ORIGIN], counterRegression: 'refuse', attestation: 'none', aaguidAllowList: [], trustRootsFile: '', timeoutSeconds: 120 }, ORIGIN);

  const anyResponse = fc.oneof(
    fc.jsonValue(),
    fc.record({
      id: fc.string({ maxLength: 20 }),
      rawId: fc.string({ maxLength: 20 }),
      type: fc.constantFrom('public-key', 'x'),
      response: fc.dictionary(fc.constantFrom('clientDataJSON', 'attestationObject', 'authenticatorData', 'signature', 'userHandle', 'transports'), fc.oneof(fc.jsonValue(), fc.base64String().map((s) => s.replace(/[+/=]/g, '')))),
    }),
  );

  it('random responses: never a throw, always a typed refusal', async () => {
    await fc.assert(
      fc.asyncProperty(anyResponse, async (response) => {
        const challenge = newChallenge();
        const reg = await verifyRegistration(settings, { response, expectedChallenge: challenge });
        assert.equal(reg.ok, false);
        const credential: StoredCredential = { credentialId: 'AAAA', publicKey: 'pQECAyYgASFYIA', counter: 0, backupEligible: false, backedUp: false, transports: [] };
        const auth = await verifyAssertion(settings, { response, expectedChallenge: challenge, credential });
        assert.equal(auth.ok, false);
      }),
      { numRuns: RUNS * 2, ...SEED },
    );
  });

  /** Flips bytes inside one base64url member (decoded), or replaces the member. */
  const memberEdit = fc.record({ member: fc.constantFrom('clientDataJSON', 'authenticatorData', 'signature', 'attestationObject', 'id'), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }), replace: fc.boolean() });

  function applyEdit(response: Record<string, unknown>, e: { member: string; at: number; xor: number; replace: boolean }): Record<string, unknown> | undefined {
    const copy = structuredClone(response) as { id: string; rawId: string; response: Record<string, string> };
    const current = e.member === 'id' ? copy.id : copy.response[e.member];
    if (current === undefined) return undefined;
    const bytes = Buffer.from(current, 'base64url');
    if (e.replace) bytes.fill(e.xor % 256);
    else bytes[e.at % bytes.length] = (bytes[e.at % bytes.length] ?? 0) ^ e.xor;
    const value = bytes.toString('base64url');
    if (e.member === 'id') {
      copy.id = value;
      copy.rawId = value;
    } else copy.response[e.member] = value;
    return copy;
  }

  it('a valid assertion with one signed part changed: refused with a typed reason, and the untouched one still verifies', async () => {
    const cred = new SoftCredential({ counter: 1 });
    const regChallenge = newChallenge();
    const reg = await verifyRegistration(settings, { response: cred.register({ challenge: regChallenge, origin: ORIGIN, rpId: RP }), expectedChallenge: regChallenge });
    assert.ok(reg.ok, JSON.stringify(reg));
    const stored: StoredCredential = { credentialId: reg.credential.credentialId, publicKey: reg.credential.publicKey, counter: reg.credential.counter, backupEligible: reg.credential.backupEligible, backedUp: reg.credential.backedUp, transports: reg.credential.transports };
    await fc.assert(
      fc.asyncProperty(memberEdit, async (e) => {
        const challenge = newChallenge();
        const response = cred.assert({ challenge, origin: ORIGIN, rpId: RP });
        const edited = applyEdit(response, e);
        fc.pre(edited !== undefined);
        const r = await verifyAssertion(settings, { response: edited, expectedChallenge: challenge, credential: stored });
        assert.equal(r.ok, false, `edited ${e.member} accepted`);
        assert.equal(typeof (r as { reason?: unknown }).reason, 'string');
        const ok = await verifyAssertion(settings, { response, expectedChallenge: challenge, credential: stored });
        assert.ok(ok.ok, `the unedited assertion verifies: ${JSON.stringify(ok)}`);
      }),
      { numRuns: RUNS, ...SEED },
    );
  });

  it('found by this fuzzer: an ES256 signature is accepted only in its canonical DER encoding (the library ignored the tag class)', async () => {
    const cred = new SoftCredential({ counter: 1 });
    const regChallenge = newChallenge();
    const reg = await verifyRegistration(settings, { response: cred.register({ challenge: regChallenge, origin: ORIGIN, rpId: RP }), expectedChallenge: regChallenge });
    assert.ok(reg.ok);
    const stored: StoredCredential = { credentialId: reg.credential.credentialId, publicKey: reg.credential.publicKey, counter: reg.credential.counter, backupEligible: reg.credential.backupEligible, backedUp: reg.credential.backedUp, transports: reg.credential.transports };
    const challenge = newChallenge();
    const response = cred.assert({ challenge, origin: ORIGIN, rpId: RP }) as { response: { signature: string } };
    const sig = Buffer.from(response.response.signature, 'base64url');
    assert.ok(isCanonicalDerEcdsaSignature(sig));
    const variants = [Buffer.concat([Buffer.from([0xb0]), sig.subarray(1)]), Buffer.concat([sig, Buffer.from([0])]), Buffer.concat([Buffer.from([0x30, 0x81, sig.length - 2]), sig.subarray(2)])];
    for (const v of variants) {
      assert.equal(isCanonicalDerEcdsaSignature(v), false, v.toString('hex'));
      const edited = structuredClone(response);
      edited.response.signature = v.toString('base64url');
      const r = await verifyAssertion(settings, { response: edited, expectedChallenge: challenge, credential: stored });
      assert.deepEqual(r, { ok: false, reason: 'signature_invalid' }, v.toString('hex'));
    }
    assert.ok((await verifyAssertion(settings, { response, expectedChallenge: challenge, credential: stored })).ok);
  });

  it('a valid registration with bytes changed: never a throw; accepted only when type, challenge and origin are still ours', async () => {
    const cred = new SoftCredential();
    await fc.assert(
      fc.asyncProperty(memberEdit.filter((e) => e.member !== 'authenticatorData' && e.member !== 'signature'), async (e) => {
        const challenge = newChallenge();
        const response = cred.register({ challenge, origin: ORIGIN, rpId: RP });
        const edited = applyEdit(response, e);
        fc.pre(edited !== undefined);
        const r = await verifyRegistration(settings, { response: edited, expectedChallenge: challenge });
        // Attestation "none" signs nothing: a changed attestation object may still be a
        // well-formed new credential (it is the browser's word either way). A changed
        // clientDataJSON (challenge, origin, type) never is.
        if (r.ok) {
          const cd = JSON.parse(Buffer.from((edited as { response: { clientDataJSON: string } }).response.clientDataJSON, 'base64url').toString('utf8')) as Record<string, unknown>;
          assert.deepEqual([cd.type, cd.challenge, cd.origin], ['webauthn.create', challenge, ORIGIN], `accepted with clientData ${JSON.stringify(cd)}`);
          assert.notEqual(cd.crossOrigin, true);
        } else assert.equal(typeof r.reason, 'string');
      }),
      { numRuns: RUNS, ...SEED },
    );
  });
});

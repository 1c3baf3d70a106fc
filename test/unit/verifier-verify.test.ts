import assert from 'node:assert/strict';
import { KeyObject, sign } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createLocalJWKSet } from 'jose';
import { FixedClock } from '../../src/clock.ts';
import {
  createJwksCache,
  MemoryReplayStore,
  StepUpTokenError,
  verifyStepUpToken,
  VerifierUnavailableError,
  type JsonObject,
  type ReplayStore,
  type StepUpTokenErrorCode,
  type VerifyStepUpTokenOptions,
} from '../../src/verifier/index.ts';
import {
  b64uJson,
  generateSigningKey,
  hs256,
  publicKeySecrets,
  serveJwks,
  signRaw,
  signRawText,
  TEST_ACTION,
  TEST_AUDIENCE,
  TEST_CONTEXT,
  TEST_ISSUER,
  TEST_SUBJECT,
  TokenMinter,
  unsigned,
  type JwksServer,
  type SigningKey,
} from '../helpers/token-minter.ts';

const T0 = Date.UTC(2026, 2, 1, 8, 0, 0);
const clock = new FixedClock(T0);
let minter: TokenMinter;
let edKey: SigningKey;
let server: JwksServer;

before(async () => {
  minter = await TokenMinter.create({ now: () => clock.now() });
  edKey = await generateSigningKey('EdDSA');
  minter.keys.push(edKey);
  server = await serveJwks(() => minter.jwks());
});
after(async () => {
  await server.close();
});

interface Harness {
  store: MemoryReplayStore;
  options: VerifyStepUpTokenOptions;
  verify(token: string, overrides?: Partial<VerifyStepUpTokenOptions>): ReturnType<typeof verifyStepUpToken>;
}

function harness(): Harness {
  const store = new MemoryReplayStore({ clock });
  const options: VerifyStepUpTokenOptions = {
    issuer: TEST_ISSUER,
    audience: TEST_AUDIENCE,
    jwks: createJwksCache({ jwksUri: server.url, clock }),
    requiredAcr: 'urn:stepgate:aal2',
    expectedSubject: TEST_SUBJECT,
    expectedAction: TEST_ACTION,
    expectedContext: { ...TEST_CONTEXT },
    replayStore: store,
    clock,
  };
  return { store, options, verify: (token, overrides = {}) => verifyStepUpToken(token, { ...options, ...overrides }) };
}

async function rejects(promise: Promise<unknown>, code: StepUpTokenErrorCode, field?: string): Promise<StepUpTokenError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof StepUpTokenError, `expected StepUpTokenError(${code}), got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (field !== undefined) assert.equal(err.field, field);
    return err;
  }
  assert.fail(`expected a StepUpTokenError(${code}), the token was accepted`);
}

function flipSignatureByte(token: string): string {
  const [h, p, s = ''] = token.split('.');
  const sig = Buffer.from(s, 'base64url');
  sig[10] = (sig[10] ?? 0) ^ 0x01;
  return `${h}.${p}.${sig.toString('base64url')}`;
}

let h: Harness;
beforeEach(() => {
  clock.set(T0);
  h = harness();
});

describe('verifyStepUpToken: the good path', () => {
  it('accepts a valid ES256 token once and returns its claims', async () => {
    const token = await minter.mint();
    const claims = await h.verify(token);
    assert.equal(claims.sub, TEST_SUBJECT);
    assert.equal(claims.aud, TEST_AUDIENCE);
    assert.equal(claims.acr, 'urn:stepgate:aal2');
    assert.deepEqual(claims.authorization_details, [{ type: TEST_ACTION, ...TEST_CONTEXT }]);
    await rejects(h.verify(token), 'replayed', 'jti');
  });

  it('accepts an EdDSA token from the same JWKS', async () => {
    const claims = await h.verify(await minter.mint({ key: edKey }));
    assert.equal(claims.sub, TEST_SUBJECT);
  });

  it('accepts a stronger acr than required and any known acr when none is required', async () => {
    await h.verify(await minter.mint({ claims: { acr: 'urn:stepgate:aal3' } }));
    await h.verify(await minter.mint({ claims: { acr: 'urn:stepgate:aal1' } }), { requiredAcr: undefined });
  });

  it('works with a jose key getter (createLocalJWKSet) too', async () => {
    const jwks = createLocalJWKSet(minter.jwks());
    await h.verify(await minter.mint(), { jwks });
    const stranger = await generateSigningKey('ES256');
    await rejects(h.verify(await minter.mint({ key: stranger }), { jwks }), 'kid_unknown');
  });

  it('accepts within the clock tolerance and refuses just past it', async () => {
    const token = await minter.mint();
    clock.advance(120 + 5 - 1);
    await h.verify(token);
    clock.set(T0);
    const late = await minter.mint();
    clock.advance(120 + 5);
    await rejects(h.verify(late), 'token_expired');
    clock.set(T0);
    const strict = await minter.mint();
    clock.advance(120);
    await rejects(h.verify(strict, { clockToleranceSeconds: 0 }), 'token_expired');
  });

  it('remembers the jti until the last second the token could be accepted', async () => {
    const seen: Date[] = [];
    const spy: ReplayStore = {
      async consume(_jti, expiresAt) {
        seen.push(expiresAt);
        return true;
      },
    };
    const iat = Math.floor(T0 / 1000);
    await h.verify(await minter.mint(), { replayStore: spy });
    await h.verify(await minter.mint({ claims: { exp: iat + 3600 } }), { replayStore: spy, maxTokenAgeSeconds: 300 });
    assert.deepEqual(
      seen.map((d) => d.getTime() / 1000),
      [iat + 120 + 5 + 1, iat + 300 + 5 + 1],
    );
  });
});

describe('verifyStepUpToken: algorithm attacks', () => {
  for (const alg of ['none', 'noNE', 'NONE', 'None', 'nOnE']) {
    it(`refuses alg "${alg}" (unsigned)`, async () => {
      const { header, claims } = minter.parts({ header: { alg } });
      await rejects(h.verify(unsigned(header, claims)), 'alg_not_allowed', 'alg');
      // With a signature-shaped tail as well.
      await rejects(h.verify(`${unsigned(header, claims)}AAAA`), 'alg_not_allowed', 'alg');
    });
  }

  it('refuses HS256 signed with the public key (any encoding) as the HMAC secret, without fetching keys', async () => {
    for (const { label, secret } of await publicKeySecrets(minter.key)) {
      const { header, claims } = minter.parts({ header: { alg: 'HS256' } });
      const err = await rejects(h.verify(hs256(header, claims, secret)), 'alg_not_allowed');
      assert.equal(err.field, 'alg', label);
    }
    const before = server.requests;
    const { header, claims } = minter.parts({ header: { alg: 'HS256' } });
    await rejects(h.verify(hs256(header, claims, 'x')), 'alg_not_allowed');
    assert.equal(server.requests, before);
  });

  for (const alg of ['RS256', 'PS256', 'ES384', 'ES512', 'es256', 'Ed25519', 'HS512', '']) {
    it(`refuses alg "${alg}"`, async () => {
      await rejects(h.verify(signRaw({ ...minter.defaultHeader(), alg }, minter.defaultClaims(), minter.key)), 'alg_not_allowed', 'alg');
    });
  }

  it('refuses a missing alg', async () => {
    await rejects(h.verify(signRaw({ kid: minter.key.kid, typ: 'stepup+jwt' }, minter.defaultClaims(), minter.key)), 'alg_not_allowed');
  });

  it('refuses an ES256 header naming an Ed25519 key (and the reverse)', async () => {
    const wrongAlg = signRaw({ alg: 'ES256', kid: edKey.kid, typ: 'stepup+jwt' }, minter.defaultClaims(), minter.key);
    await rejects(h.verify(wrongAlg), 'signature_invalid');
    const reverse = signRaw({ alg: 'EdDSA', kid: minter.key.kid, typ: 'stepup+jwt' }, minter.defaultClaims(), edKey);
    await rejects(h.verify(reverse), 'signature_invalid');
  });
});

describe('verifyStepUpToken: duplicate members', () => {
  // jose keeps the last of two equal names; a relying service's own JSON tooling may keep the first.
  it('refuses a correctly signed token whose payload or header repeats a member, at any depth', async () => {
    const { header, claims } = minter.parts();
    const headerText = JSON.stringify(header);
    const claimsText = JSON.stringify(claims);
    // Without the repeat the same hand-signed token verifies: the refusals below are for the repeat alone.
    await h.verify(signRawText(headerText, claimsText, minter.key));
    const amount = `"amount":"${TEST_CONTEXT.amount}"`;
    assert.ok(claimsText.includes(amount));
    const variants: [string, string, string][] = [
      [headerText, claimsText.replace(amount, `"amount":"99999.00",${amount}`), 'authorization_details'],
      [headerText, claimsText.replace(/}$/, `,"sub":${JSON.stringify(claims.sub)}}`), 'sub'],
      [headerText.replace(/}$/, `,"alg":${JSON.stringify(header.alg)}}`), claimsText, 'alg'],
    ];
    for (const [headerVariant, claimsVariant, field] of variants) {
      const fresh = minter.parts();
      const text = claimsVariant.replace(String(claims.jti), String(fresh.claims.jti));
      const err = await rejects(h.verify(signRawText(headerVariant, text, minter.key)), 'token_malformed', field);
      assert.match(err.message, /repeats a member/);
    }
  });
});

describe('verifyStepUpToken: signature', () => {
  it('refuses a flipped signature byte', async () => {
    await rejects(h.verify(flipSignatureByte(await minter.mint())), 'signature_invalid');
  });

  it('refuses a payload changed after signing (amount raised)', async () => {
    const token = await minter.mint();
    const [hd, , sig] = token.split('.');
    const claims = { ...minter.defaultClaims(), authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT, amount: '9999.00' }] };
    await rejects(h.verify(`${hd}.${b64uJson(claims)}.${sig}`, { expectedContext: { ...TEST_CONTEXT, amount: '9999.00' } }), 'signature_invalid');
  });

  it('refuses a token signed by another key under the gateway kid', async () => {
    const impostor = await generateSigningKey('ES256', minter.key.kid);
    await rejects(h.verify(await minter.mint({ key: impostor })), 'signature_invalid');
  });

  it('refuses a missing or truncated signature', async () => {
    const [hd, p] = (await minter.mint()).split('.');
    await rejects(h.verify(`${hd}.${p}.`), 'signature_invalid');
    await rejects(h.verify(`${hd}.${p}.AAAA`), 'signature_invalid');
  });
});

describe('verifyStepUpToken: header', () => {
  for (const typ of [undefined, 'JWT', 'jwt', 'STEPUP+JWT', 'application/stepup+jwt', 'stepup+jwt ', 'at+jwt', 42]) {
    it(`refuses typ ${JSON.stringify(typ) ?? 'missing'}`, async () => {
      const token = signRaw({ alg: 'ES256', kid: minter.key.kid, ...(typ === undefined ? {} : { typ }) }, minter.defaultClaims(), minter.key);
      await rejects(h.verify(token), 'typ_invalid', 'typ');
    });
  }

  it('refuses an embedded jwk, even one that would verify the signature', async () => {
    const attacker = await generateSigningKey('ES256', minter.key.kid);
    await rejects(h.verify(await minter.mint({ key: attacker, header: { jwk: attacker.publicJwk } })), 'header_forbidden', 'jwk');
  });

  it('refuses a foreign jku / x5u without ever contacting it', async () => {
    const attacker = await generateSigningKey('ES256');
    const foreign = await serveJwks(() => ({ keys: [attacker.publicJwk] }));
    try {
      await rejects(h.verify(await minter.mint({ key: attacker, header: { jku: foreign.url } })), 'header_forbidden', 'jku');
      await rejects(h.verify(await minter.mint({ key: attacker, header: { x5u: foreign.url } })), 'header_forbidden', 'x5u');
      // Even a jku pointing at the real JWKS is refused: the key source is configuration, not input.
      await rejects(h.verify(await minter.mint({ header: { jku: server.url } })), 'header_forbidden', 'jku');
      assert.equal(foreign.requests, 0);
    } finally {
      await foreign.close();
    }
  });

  it('refuses x5c, crit and b64', async () => {
    await rejects(h.verify(await minter.mint({ header: { x5c: ['MIIB'] } })), 'header_forbidden', 'x5c');
    await rejects(h.verify(await minter.mint({ header: { crit: ['exp'], exp: 1 } })), 'header_forbidden', 'crit');
    await rejects(h.verify(await minter.mint({ header: { b64: true } })), 'header_forbidden', 'b64');
  });

  it('refuses a missing kid', async () => {
    await rejects(h.verify(await minter.mint({ header: { kid: undefined } })), 'token_malformed', 'kid');
  });
});

describe('verifyStepUpToken: issuer, audience, subject, times', () => {
  it('refuses the wrong issuer', async () => {
    await rejects(h.verify(await minter.mint({ claims: { iss: 'https://evil.example' } })), 'issuer_invalid', 'iss');
    await rejects(h.verify(await minter.mint({ claims: { iss: `${TEST_ISSUER}/` } })), 'issuer_invalid', 'iss');
    await rejects(h.verify(await minter.mint({ claims: { iss: undefined } })), 'token_malformed', 'iss');
  });

  it('refuses the wrong audience, an audience list, and a missing audience', async () => {
    await rejects(h.verify(await minter.mint({ claims: { aud: 'client_other' } })), 'audience_invalid', 'aud');
    await rejects(h.verify(await minter.mint({ claims: { aud: [TEST_AUDIENCE, 'client_other'] } })), 'audience_invalid', 'aud');
    await rejects(h.verify(await minter.mint({ claims: { aud: undefined } })), 'token_malformed', 'aud');
  });

  it('refuses a token for another user', async () => {
    await rejects(h.verify(await minter.mint({ claims: { sub: 'usr_mallory' } })), 'subject_mismatch', 'sub');
    await rejects(h.verify(await minter.mint(), { expectedSubject: 'usr_bob' }), 'subject_mismatch', 'sub');
  });

  it('refuses an expired token', async () => {
    const token = await minter.mint();
    clock.advance(3600);
    await rejects(h.verify(token), 'token_expired', 'exp');
  });

  it('refuses a token older than maxTokenAgeSeconds whatever its exp', async () => {
    const token = await minter.mint({ claims: { exp: Math.floor(T0 / 1000) + 86_400 } });
    clock.advance(300 + 5 + 1);
    await rejects(h.verify(token), 'token_expired', 'iat');
  });

  it('refuses nbf, iat or auth_time in the future', async () => {
    const now = Math.floor(T0 / 1000);
    await rejects(h.verify(await minter.mint({ claims: { nbf: now + 60 } })), 'token_not_yet_valid', 'nbf');
    await rejects(h.verify(await minter.mint({ claims: { iat: now + 60, exp: now + 180 } })), 'token_not_yet_valid', 'iat');
    await rejects(h.verify(await minter.mint({ claims: { auth_time: now + 60 } })), 'token_not_yet_valid', 'auth_time');
    // A past nbf is fine.
    await h.verify(await minter.mint({ claims: { nbf: now - 1 } }));
  });

  it('refuses an old authentication when maxAuthAgeSeconds is set', async () => {
    const now = Math.floor(T0 / 1000);
    const token = await minter.mint({ claims: { auth_time: now - 600 } });
    await rejects(h.verify(token, { maxAuthAgeSeconds: 300 }), 'auth_too_old', 'auth_time');
    await h.verify(token, { maxAuthAgeSeconds: 900 });
  });
});

describe('verifyStepUpToken: assurance, action and exact context', () => {
  it('refuses an acr below the required one, and unknown acr values', async () => {
    await rejects(h.verify(await minter.mint({ claims: { acr: 'urn:stepgate:aal1' } })), 'acr_insufficient', 'acr');
    await rejects(h.verify(await minter.mint({ claims: { acr: 'urn:stepgate:aal2' } }), { requiredAcr: 'urn:stepgate:aal3' }), 'acr_insufficient');
    for (const acr of ['urn:stepgate:aal9', 'URN:STEPGATE:AAL3', 'aal3', 3, undefined]) {
      await rejects(h.verify(await minter.mint({ claims: { acr } }), { requiredAcr: undefined }), 'acr_insufficient', 'acr');
    }
  });

  it('refuses a token for another action', async () => {
    await rejects(h.verify(await minter.mint(), { expectedAction: 'payment_code.offline_seed' }), 'action_mismatch', 'type');
  });

  const alternatives: Record<string, unknown[]> = {
    amount: ['120.01', '120.0', '120', 120, 120.0, '0120.00', ' 120.00', null],
    currency: ['USD', 'cny', 'CNY ', ['CNY'], { code: 'CNY' }],
    payee: ['shop-43', 'Shop-42', 'shop‐42', '', true],
    deviceId: ['dev-2', 'DEV-1', 'dev-1\u0000', 1],
  };
  for (const [field, values] of Object.entries(alternatives)) {
    it(`refuses a context that differs in "${field}" (every value in turn)`, async () => {
      for (const value of values) {
        const token = await minter.mint();
        const expectedContext = { ...TEST_CONTEXT, [field]: value } as JsonObject;
        await rejects(h.verify(token, { expectedContext }), 'context_mismatch', field);
        // And the other way round: the token approved the odd value, the service acts on the real one.
        const odd = await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT, [field]: value }] } });
        await rejects(h.verify(odd), 'context_mismatch', field);
      }
    });
  }

  it('refuses "120.00" vs "120.0" and "120" vs 120 exactly', async () => {
    await rejects(h.verify(await minter.mint(), { expectedContext: { ...TEST_CONTEXT, amount: '120.0' } }), 'context_mismatch', 'amount');
    const numeric = await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT, amount: 120 }] } });
    await rejects(h.verify(numeric, { expectedContext: { ...TEST_CONTEXT, amount: '120' } }), 'context_mismatch', 'amount');
  });

  it('"10.1" and "10.10" are never one binding: refused both ways (context_mismatch)', async () => {
    const approved = (amount: string) => minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT, amount }] } });
    await rejects(h.verify(await approved('10.10'), { expectedContext: { ...TEST_CONTEXT, amount: '10.1' } }), 'context_mismatch', 'amount');
    await rejects(h.verify(await approved('10.1'), { expectedContext: { ...TEST_CONTEXT, amount: '10.10' } }), 'context_mismatch', 'amount');
    await h.verify(await approved('10.10'), { expectedContext: { ...TEST_CONTEXT, amount: '10.10' } });
  });

  it('refuses a token whose approved amount breaks the money rule even when the request carries the same bytes (context_invalid)', async () => {
    for (const [amount, currency, field] of [
      ['10.001', 'CNY', 'amount'], // finer than the fen
      ['100.5', 'JPY', 'amount'], // yen have no decimals
      ['10.1', 'CNY', 'amount'], // not the one spelling
      ['10.00', 'ZZZ', 'currency'], // no ISO 4217 code
      ['1', 'XAU', 'currency'], // no minor unit
    ] as const) {
      const context = { ...TEST_CONTEXT, amount, currency };
      const token = await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...context }] } });
      await rejects(h.verify(token, { expectedContext: context }), 'context_invalid', field);
    }
    const yen = { ...TEST_CONTEXT, amount: '100', currency: 'JPY' };
    await h.verify(await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...yen }] } }), { expectedContext: yen });
  });

  it('refuses a token whose approved payee is not NFC or hides an invisible or bidi character, even when the request carries the same bytes (context_invalid)', async () => {
    for (const payee of ['cafe\u0301-42', 'shop\u200b42', 'shop\ufeff42', 'shop\u2066-42\u2069', 'shop\u00ad42']) {
      const context = { ...TEST_CONTEXT, payee };
      const token = await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...context }] } });
      await rejects(h.verify(token, { expectedContext: context }), 'context_invalid', 'payee');
    }
    const nfc = { ...TEST_CONTEXT, payee: 'caf\u00e9-42' };
    await h.verify(await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...nfc }] } }), { expectedContext: nfc });
  });

  it('compares payees code unit by code unit: no case folding, no Unicode normalisation, no trimming', async () => {
    const approved = (payee: string) => minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT, payee }] } });
    for (const [signed, presented] of [
      ['caf\u00e9-42', 'cafe\u0301-42'], // NFC vs NFD: the same on screen
      ['shop-42', 'SHOP-42'],
      ['shop-42', '\uff53hop-42'], // fullwidth s (NFKC folds it)
      ['shop-42', 'shop-42 '],
    ]) {
      await rejects(h.verify(await approved(signed as string), { expectedContext: { ...TEST_CONTEXT, payee: presented as string } }), 'context_mismatch', 'payee');
    }
  });

  it('refuses an extra field on either side and a missing field on either side', async () => {
    await rejects(h.verify(await minter.mint(), { expectedContext: { ...TEST_CONTEXT, offline: false } }), 'context_mismatch', 'offline');
    const extra = await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...TEST_CONTEXT, count: 5 }] } });
    await rejects(h.verify(extra), 'context_mismatch', 'count');
    const { payee: _payee, ...withoutPayee } = TEST_CONTEXT;
    await rejects(h.verify(await minter.mint(), { expectedContext: withoutPayee }), 'context_mismatch', 'payee');
    const missing = await minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...withoutPayee }] } });
    await rejects(h.verify(missing), 'context_mismatch', 'payee');
  });

  it('compares nested values exactly and ignores key order', async () => {
    const context = { ...TEST_CONTEXT, limits: { daily: '500.00', codes: [1, 2] } };
    const token = () => minter.mint({ claims: { authorization_details: [{ type: TEST_ACTION, ...context }] } });
    await h.verify(await token(), { expectedContext: { limits: { codes: [1, 2], daily: '500.00' }, deviceId: 'dev-1', payee: 'shop-42', currency: 'CNY', amount: '120.00' } });
    await rejects(h.verify(await token(), { expectedContext: { ...context, limits: { daily: '500.00', codes: [2, 1] } } }), 'context_mismatch', 'limits');
    await rejects(h.verify(await token(), { expectedContext: { ...context, limits: { daily: '500.00' } } }), 'context_mismatch', 'limits');
  });

  it('refuses malformed authorization_details', async () => {
    const cases: unknown[] = [
      undefined,
      [],
      {},
      'payment_code.issue',
      [{ ...TEST_CONTEXT }],
      [{ type: 1, ...TEST_CONTEXT }],
      [{ type: TEST_ACTION, ...TEST_CONTEXT }, { type: TEST_ACTION, ...TEST_CONTEXT }],
      [[TEST_ACTION]],
    ];
    for (const details of cases) {
      await rejects(h.verify(await minter.mint({ claims: { authorization_details: details } })), 'token_malformed', 'authorization_details');
    }
  });
});

describe('verifyStepUpToken: malformed input', () => {
  it('refuses things that are not compact JWS', async () => {
    const good = await minter.mint();
    const [hd, p, s] = good.split('.');
    const cases = ['', 'abc', 'a.b', `${good}.x`, `${hd}.${p}`, `!!.${p}.${s}`, `${b64uJson('x')}.${p}.${s}`, `${Buffer.from('{not json').toString('base64url')}.${p}.${s}`, `x`.repeat(9000)];
    for (const token of cases) await rejects(h.verify(token), 'token_malformed');
    await rejects(h.verify(undefined as unknown as string), 'token_malformed');
  });

  it('refuses a well-signed payload that is not a claims object', async () => {
    for (const payload of ['not json', '[1,2]', '"a string"', 'null']) {
      const input = `${b64uJson(minter.defaultHeader())}.${Buffer.from(payload).toString('base64url')}`;
      const sig = sign('sha256', Buffer.from(input), { key: KeyObject.from(minter.key.privateKey), dsaEncoding: 'ieee-p1363' });
      await rejects(h.verify(`${input}.${sig.toString('base64url')}`), 'token_malformed');
    }
  });

  for (const claim of ['jti', 'sub', 'iat', 'exp', 'txn', 'auth_time', 'amr']) {
    it(`refuses a token without "${claim}"`, async () => {
      await rejects(h.verify(await minter.mint({ claims: { [claim]: undefined } })), 'token_malformed', claim);
    });
  }

  it('refuses claims of the wrong type', async () => {
    await rejects(h.verify(await minter.mint({ claims: { jti: 42 } })), 'token_malformed', 'jti');
    await rejects(h.verify(await minter.mint({ claims: { jti: 'x'.repeat(300) } })), 'token_malformed', 'jti');
    await rejects(h.verify(await minter.mint({ claims: { exp: String(Math.floor(T0 / 1000) + 60) } })), 'token_malformed', 'exp');
    await rejects(h.verify(await minter.mint({ claims: { amr: 'pwd' } })), 'token_malformed', 'amr');
    await rejects(h.verify(await minter.mint({ claims: { txn: '' } })), 'token_malformed', 'txn');
  });
});

describe('verifyStepUpToken: single use', () => {
  it('accepts exactly one of 20 concurrent presentations', async () => {
    const token = await minter.mint();
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => h.verify(token)));
    const accepted = results.filter((r) => r.status === 'fulfilled');
    assert.equal(accepted.length, 1);
    for (const r of results) {
      if (r.status === 'rejected') assert.equal((r.reason as StepUpTokenError).code, 'replayed');
    }
  });

  it('accepts exactly one of two concurrent presentations', async () => {
    const token = await minter.mint();
    const results = await Promise.allSettled([h.verify(token), h.verify(token)]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  });

  it('does not burn the jti of a refused token', async () => {
    const jti = 'jti_shared_by_bad_and_good_tokens';
    const stranger = await generateSigningKey('ES256');
    const refused: [() => Promise<unknown>, StepUpTokenErrorCode][] = [
      [async () => h.verify(await minter.mint({ claims: { jti } }), { expectedContext: { ...TEST_CONTEXT, amount: '1.00' } }), 'context_mismatch'],
      [async () => h.verify(await minter.mint({ claims: { jti } }), { expectedAction: 'other.action' }), 'action_mismatch'],
      [async () => h.verify(await minter.mint({ claims: { jti, acr: 'urn:stepgate:aal1' } })), 'acr_insufficient'],
      [async () => h.verify(await minter.mint({ claims: { jti, sub: 'usr_bob' } })), 'subject_mismatch'],
      [async () => h.verify(await minter.mint({ claims: { jti, aud: 'client_other' } })), 'audience_invalid'],
      [async () => h.verify(await minter.mint({ claims: { jti, iss: 'https://evil' } })), 'issuer_invalid'],
      [async () => h.verify(await minter.mint({ claims: { jti, nbf: Math.floor(T0 / 1000) + 60 } })), 'token_not_yet_valid'],
      [async () => h.verify(flipSignatureByte(await minter.mint({ claims: { jti } }))), 'signature_invalid'],
      [async () => h.verify(await minter.mint({ key: stranger, claims: { jti } })), 'kid_unknown'],
      [async () => h.verify(await minter.mint({ claims: { jti }, header: { typ: 'JWT' } })), 'typ_invalid'],
    ];
    for (const [attempt, code] of refused) await rejects(attempt(), code);
    assert.equal(h.store.size, 0);
    await h.verify(await minter.mint({ claims: { jti } }));
    await rejects(h.verify(await minter.mint({ claims: { jti } })), 'replayed');
  });

  it('fails closed when the replay store cannot answer', async () => {
    const broken: ReplayStore = {
      consume: () => Promise.reject(new Error('connection refused')),
    };
    await assert.rejects(h.verify(await minter.mint(), { replayStore: broken }), (err: unknown) => {
      assert.ok(err instanceof VerifierUnavailableError);
      assert.equal(err.code, 'replay_store_unavailable');
      return true;
    });
  });
});

describe('verifyStepUpToken: unknown kid', () => {
  it('refuses an unknown kid and refreshes the JWKS at most once per interval', async () => {
    const jwks = createJwksCache({ jwksUri: server.url, clock, minRefreshIntervalSeconds: 30 });
    const start = server.requests;
    await h.verify(await minter.mint(), { jwks });
    assert.equal(server.requests - start, 1);
    const stranger = await generateSigningKey('ES256');
    for (let i = 0; i < 25; i += 1) {
      const token = await minter.mint({ key: stranger, header: { kid: `random-${i}` } });
      await rejects(h.verify(token, { jwks }), 'kid_unknown', 'kid');
    }
    assert.equal(server.requests - start, 1, 'a flood of unknown kids must not hammer the gateway');
    clock.advance(31);
    await rejects(h.verify(await minter.mint({ key: stranger }), { jwks }), 'kid_unknown');
    assert.equal(server.requests - start, 2);
  });
});

describe('verifyStepUpToken: misuse is a TypeError', () => {
  it('rejects bad options before looking at the token', async () => {
    const token = await minter.mint();
    const bad: Partial<VerifyStepUpTokenOptions>[] = [
      { expectedContext: { ...TEST_CONTEXT, type: TEST_ACTION } },
      { expectedContext: { ...TEST_CONTEXT, amount: undefined } as unknown as JsonObject },
      { expectedContext: { ...TEST_CONTEXT, at: new Date() } as unknown as JsonObject },
      { expectedContext: { ...TEST_CONTEXT, n: Number.NaN } },
      { requiredAcr: 'aal2' as never },
      { issuer: '' },
      { audience: undefined as unknown as string },
      { expectedAction: '' },
      { jwks: {} as never },
      { replayStore: {} as never },
      { clockToleranceSeconds: -1 },
    ];
    for (const overrides of bad) await assert.rejects(h.verify(token, overrides), TypeError, JSON.stringify(Object.keys(overrides)));
    assert.equal(h.store.size, 0);
  });
});

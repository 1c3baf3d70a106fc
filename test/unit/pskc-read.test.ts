import assert from 'node:assert/strict';
import { createSecretKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { isAppError } from '../../src/errors/app-error.ts';
import { tokenCodeGenerator } from '../../src/otp/index.ts';
import { base32Encode } from '../../src/otp/base32.ts';
import { readTokenFile, type ReadTokenFileOptions, type TokenFile } from '../../src/pskc/index.ts';
import { needOathtool, needPskc, oathHotp, oathTotp, type PskcJob, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';

const NOW = new Date(Date.UTC(2026, 0, 15, 12));
const PSK128 = '00112233445566778899aabbccddeeff';
const PSK256 = `${PSK128}ffeeddccbbaa99887766554433221100`;
const PASSWORD = 'Vendor transport pässword 2026';

function read(data: Buffer | string, options: Partial<ReadTokenFileOptions> = {}): TokenFile {
  return readTokenFile(Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8'), { now: NOW, maxBytes: 10 * 1024 * 1024, maxTokens: 1000, maxPbkdf2Iterations: 1_000_000, ...options });
}

/** The AppError code `fn` throws. */
function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isAppError(err)) return err.code;
    throw err;
  }
  return 'no error';
}

const hotpSeed = randomSeedHex(20);
const totpSeed = randomSeedHex(32);
const sm3Seed = randomSeedHex(16);

function job(extra: Partial<PskcJob>): PskcJob {
  return {
    tokens: [
      { serial: 'HW-1001', secret_hex: hotpSeed, algorithm: 'hotp', counter: 7, manufacturer: 'ACME & Söhne', expiry_date: '2030-01-01T00:00:00Z', key_usage: ['OTP'] },
      { serial: 'hw 1002', secret_hex: totpSeed, algorithm: 'totp', suite: 'HMAC-SHA256', digits: 8, time_interval: 60, time_drift: -2 },
      { serial: 'SM3-1003', secret_hex: sm3Seed, algorithm: 'totp', suite: 'SM3', time_interval: 60 },
    ],
    ...extra,
  };
}

const encryptions: [string, Partial<PskcJob>, Partial<ReadTokenFileOptions>][] = [
  ['plain', {}, {}],
  ['PSK aes128-cbc', { encryption: 'psk', cipher: 'aes128-cbc', key_hex: PSK128 }, { psk: Buffer.from(PSK128, 'hex') }],
  ['PSK aes256-cbc', { encryption: 'psk', cipher: 'aes256-cbc', key_hex: PSK256 }, { psk: Buffer.from(PSK256, 'hex') }],
  ['PSK kw-aes128', { encryption: 'psk', cipher: 'kw-aes128', key_hex: PSK128 }, { psk: Buffer.from(PSK128, 'hex') }],
  ['PBKDF2 aes128-cbc', { encryption: 'pbkdf2', cipher: 'aes128-cbc', password: PASSWORD, iterations: 2000 }, { password: PASSWORD }],
  ['PBKDF2 aes256-cbc', { encryption: 'pbkdf2', cipher: 'aes256-cbc', password: PASSWORD, iterations: 2000 }, { password: PASSWORD }],
];

describe('PSKC files written by python-pskc', () => {
  for (const [label, enc, keys] of encryptions) {
    it(`${label}: every field read, seeds give oathtool's codes`, (t) => {
      if (needPskc(t) || needOathtool(t)) return;
      const file = read(writePskc(job({ ...enc, fields: ['secret', 'counter'] })), keys);
      assert.deepEqual(file.problems, []);
      assert.equal(file.format, 'pskc');
      assert.equal(file.encryption, enc.encryption ?? 'none');
      const [h, tt, s] = file.tokens;
      assert.ok(h && tt && s);
      assert.deepEqual(
        { serial: h.serial, kind: h.kind, algorithm: h.algorithm, digits: h.digits, counter: h.counter, manufacturer: h.manufacturer, validUntil: h.validUntil?.toISOString() },
        { serial: 'HW-1001', kind: 'hotp', algorithm: 'SHA1', digits: 6, counter: 7, manufacturer: 'ACME & Söhne', validUntil: '2030-01-01T00:00:00.000Z' },
      );
      assert.deepEqual({ serial: tt.serial, kind: tt.kind, algorithm: tt.algorithm, digits: tt.digits, period: tt.periodSeconds, drift: tt.driftSteps }, { serial: 'HW1002', kind: 'totp', algorithm: 'SHA256', digits: 8, period: 60, drift: -2 });
      assert.deepEqual({ kind: s.kind, algorithm: s.algorithm, period: s.periodSeconds }, { kind: 'totp', algorithm: 'SM3', period: 60 });
      const hotpGen = tokenCodeGenerator(createSecretKey(h.seed), h);
      for (const c of [7, 8, 100]) assert.equal(hotpGen(c), oathHotp(hotpSeed, c));
      const totpGen = tokenCodeGenerator(createSecretKey(tt.seed), tt);
      const unix = 1_768_000_000;
      assert.equal(totpGen(Math.floor(unix / 60)), oathTotp(totpSeed, unix, { period: 60, digits: 8, algorithm: 'SHA256' }));
      assert.equal(s.seed.toString('hex'), sm3Seed);
    });
  }

  it('encrypted integers are read big-endian (counter 49 is not "1")', (t) => {
    if (needPskc(t)) return;
    const file = read(writePskc({ encryption: 'psk', key_hex: PSK128, fields: ['secret', 'counter'], tokens: [{ serial: 'C49', secret_hex: hotpSeed, counter: 49 }, { serial: 'C70000', secret_hex: hotpSeed, counter: 70000 }] }), { psk: Buffer.from(PSK128, 'hex') });
    assert.deepEqual(file.tokens.map((x) => x.counter), [49, 70000]);
  });
});

describe('PSKC: wrong key, wrong password and tampering are one error', () => {
  function tamper(xml: string, element: string, index = 0): string {
    const re = new RegExp(`(<(?:\\w+:)?${element}>)([A-Za-z0-9+/=]+)(</)`, 'g');
    let n = -1;
    return xml.replace(re, (m, open: string, b64: string, close: string) => {
      n += 1;
      if (n !== index) return m;
      const bytes = Buffer.from(b64, 'base64');
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
      return `${open}${bytes.toString('base64')}${close}`;
    });
  }

  it('PSK aes128-cbc: wrong key, tampered ValueMAC, tampered ciphertext, tampered MAC key', (t) => {
    if (needPskc(t)) return;
    const xml = writePskc(job({ encryption: 'psk', cipher: 'aes128-cbc', key_hex: PSK128 })).toString('utf8');
    const psk = Buffer.from(PSK128, 'hex');
    assert.equal(read(xml, { psk }).tokens.length, 3);
    const wrong = Buffer.from(PSK128.replace(/^00/, '01'), 'hex');
    const codes = [
      codeOf(() => read(xml, { psk: wrong })),
      codeOf(() => read(xml, { psk: Buffer.alloc(16) })),
      codeOf(() => read(tamper(xml, 'ValueMAC', 1), { psk })),
      // The first CipherValue is the MAC key's; the third is the second token's seed.
      codeOf(() => read(tamper(xml, 'CipherValue', 0), { psk })),
      codeOf(() => read(tamper(xml, 'CipherValue', 2), { psk })),
      codeOf(() => read(xml, { psk: Buffer.from(PSK256, 'hex') })),
    ];
    assert.deepEqual(codes, Array(codes.length).fill('token_file_decryption_failed'));
  });

  it('PBKDF2: a wrong password is the same error as a tampered MAC', (t) => {
    if (needPskc(t)) return;
    const xml = writePskc(job({ encryption: 'pbkdf2', password: PASSWORD, iterations: 1000 })).toString('utf8');
    assert.equal(codeOf(() => read(xml, { password: `${PASSWORD}!` })), 'token_file_decryption_failed');
    assert.equal(codeOf(() => read(xml, { password: PASSWORD.normalize('NFD') })), 'token_file_decryption_failed');
    assert.equal(codeOf(() => read(tamper(xml, 'ValueMAC', 0), { password: PASSWORD })), 'token_file_decryption_failed');
  });

  it('key wrap: a wrong key or a tampered value fails the unwrap integrity check', (t) => {
    if (needPskc(t)) return;
    const xml = writePskc(job({ encryption: 'psk', cipher: 'kw-aes128', key_hex: PSK128 })).toString('utf8');
    assert.equal(codeOf(() => read(xml, { psk: Buffer.from(PSK128.replace(/ff$/, 'fe'), 'hex') })), 'token_file_decryption_failed');
    assert.equal(codeOf(() => read(tamper(xml, 'CipherValue', 1), { psk: Buffer.from(PSK128, 'hex') })), 'token_file_decryption_failed');
  });

  it('an encrypted file without (or with the wrong kind of) key asks for it', (t) => {
    if (needPskc(t)) return;
    const pskFile = writePskc(job({ encryption: 'psk', key_hex: PSK128 }));
    const pwFile = writePskc(job({ encryption: 'pbkdf2', password: PASSWORD, iterations: 1000 }));
    assert.equal(codeOf(() => read(pskFile)), 'token_file_key_required');
    assert.equal(codeOf(() => read(pskFile, { password: PASSWORD })), 'token_file_key_required');
    assert.equal(codeOf(() => read(pwFile, { psk: Buffer.from(PSK128, 'hex') })), 'token_file_key_required');
  });

  it('a CBC value without ValueMAC is refused, not imported unchecked', (t) => {
    if (needPskc(t)) return;
    const xml = writePskc(job({ encryption: 'psk', key_hex: PSK128 })).toString('utf8').replace(/<pskc:ValueMAC>[^<]*<\/pskc:ValueMAC>/g, '');
    assert.equal(codeOf(() => read(xml, { psk: Buffer.from(PSK128, 'hex') })), 'token_file_invalid');
  });

  it('PBKDF2 iteration counts above the limit are refused before deriving', (t) => {
    if (needPskc(t)) return;
    const xml = writePskc(job({ encryption: 'pbkdf2', password: PASSWORD, iterations: 1000 })).toString('utf8').replace(/<(\w+:)?IterationCount>1000</, '<$1IterationCount>999999999<');
    assert.equal(codeOf(() => read(xml, { password: PASSWORD })), 'token_file_invalid');
  });
});

describe('PSKC: per-token problems name the serial', () => {
  it('expired keys, wrong usage, server-side PINs, weak seeds, duplicates, unsupported algorithms', (t) => {
    if (needPskc(t)) return;
    const file = read(
      writePskc({
        tokens: [
          { serial: 'OK-1', secret_hex: hotpSeed },
          { serial: 'EXPIRED-2', secret_hex: hotpSeed, expiry_date: '2025-12-31T23:59:59Z' },
          { serial: 'USAGE-3', secret_hex: hotpSeed, key_usage: ['Encrypt'] },
          { serial: 'PIN-4', secret_hex: hotpSeed, pin_usage: 'Prepend' },
          { serial: 'WEAK-5', secret_hex: randomSeedHex(10) },
          { serial: 'ok-1', secret_hex: hotpSeed },
          { serial: 'OCRA-7', secret_hex: hotpSeed, algorithm: 'urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN08' },
          { serial: 'SUITE-8', secret_hex: hotpSeed, suite: 'MD5' },
          { serial: 'DIGITS-9', secret_hex: hotpSeed, digits: 10 },
        ],
      }),
    );
    assert.deepEqual(file.tokens.map((x) => x.serial), ['OK-1']);
    assert.deepEqual(
      file.problems.map((p) => [p.index, p.serial, p.code]),
      [
        [1, 'EXPIRED-2', 'expired'],
        [2, 'USAGE-3', 'unsupported_policy'],
        [3, 'PIN-4', 'unsupported_policy'],
        [4, 'WEAK-5', 'weak_secret'],
        [5, 'ok-1', 'duplicate_serial'],
        [6, 'OCRA-7', 'unsupported_algorithm'],
        [7, 'SUITE-8', 'unsupported_algorithm'],
        [8, 'DIGITS-9', 'invalid_parameter'],
      ],
    );
  });
});

describe('PSKC: a seed in the wrong element is never repeated', () => {
  const raw = Buffer.from(randomSeedHex(20), 'hex');
  const hex = raw.toString('hex');
  const b32 = base32Encode(raw);
  const b64 = raw.toString('base64');
  const encodings = [hex, hex.toUpperCase(), b32, b32.toLowerCase(), b64, b64.replace(/=+$/, '')];
  const container = (inner: string, version = '1.0') => `<?xml version="1.0"?>\n<KeyContainer Version="${version}" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">${inner}</KeyContainer>`;
  const pkg = (o: { serial?: string; algorithm?: string; suite?: string; encoding?: string; usage?: string; pin?: string }) =>
    `<KeyPackage><DeviceInfo><SerialNo>${o.serial ?? 'P-1'}</SerialNo></DeviceInfo><Key Algorithm="${o.algorithm ?? 'urn:ietf:params:xml:ns:keyprov:pskc:hotp'}">` +
    `<AlgorithmParameters>${o.suite === undefined ? '' : `<Suite>${o.suite}</Suite>`}<ResponseFormat Length="6"${o.encoding === undefined ? '' : ` Encoding="${o.encoding}"`}/></AlgorithmParameters>` +
    `<Data><Secret><PlainValue>${b64}</PlainValue></Secret></Data>` +
    `${o.usage === undefined && o.pin === undefined ? '' : `<Policy>${o.usage === undefined ? '' : `<KeyUsage>${o.usage}</KeyUsage>`}${o.pin === undefined ? '' : `<PINPolicy PINUsageMode="${o.pin}"/>`}</Policy>`}</Key></KeyPackage>`;
  const leaks = (text: string) => encodings.filter((e) => text.includes(e));

  it('per-token problems', () => {
    const file = read(
      container(
        pkg({ serial: hex }) +
          pkg({ serial: b32 }) +
          pkg({ serial: 'P-3', algorithm: b64 }) +
          pkg({ serial: 'P-4', algorithm: `urn:ietf:params:xml:ns:keyprov:pskc#${b32}` }) +
          pkg({ serial: 'P-5', suite: b32 }) +
          pkg({ serial: 'P-6', encoding: hex }) +
          pkg({ serial: 'P-7', usage: b32 }) +
          pkg({ serial: 'P-8', pin: b32 }),
      ),
    );
    assert.deepEqual(file.tokens, []);
    assert.deepEqual(
      file.problems.map((p) => [p.index, p.serial, p.code]),
      [
        [0, null, 'invalid_serial'],
        [1, null, 'invalid_serial'],
        [2, 'P-3', 'unsupported_algorithm'],
        [3, 'P-4', 'unsupported_algorithm'],
        [4, 'P-5', 'unsupported_algorithm'],
        [5, 'P-6', 'unsupported_algorithm'],
        [6, 'P-7', 'unsupported_policy'],
        [7, 'P-8', 'unsupported_policy'],
      ],
    );
    assert.deepEqual(leaks(JSON.stringify(file.problems)), []);
  });
  it('what a report may still quote: URIs and PSKC words', () => {
    const file = read(container(pkg({ serial: 'Q-1', algorithm: 'urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN08' }) + pkg({ serial: 'Q-2', suite: 'MD5' }) + pkg({ serial: 'Q-3', usage: 'Encrypt' })));
    assert.deepEqual(
      file.problems.map((p) => p.reason),
      ['key algorithm urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN08 is not HOTP or TOTP', 'suite MD5 is not SHA1, SHA256, SHA512 or SM3', 'the key may only be used for Encrypt, not OTP'],
    );
  });
  it('file-level errors: version, malformed XML (a seed as a tag or attribute name)', () => {
    for (const xml of [container(pkg({}), b32), container(`<${b32}>${pkg({})}</${b32.toLowerCase()}>`), container(`<KeyPackage ${b32}="1" ${b32}="2"/>`), `${container(pkg({}))}<${b32}/>`]) {
      let detail = '';
      try {
        read(xml);
      } catch (err) {
        assert.ok(isAppError(err));
        assert.equal(err.code, 'token_file_invalid');
        detail = JSON.stringify({ detail: err.detail, invalidParams: err.invalidParams });
      }
      assert.notEqual(detail, '', 'refused');
      assert.deepEqual(leaks(detail), [], detail);
    }
  });
});

describe('hostile XML', () => {
  const container = (inner: string) => `<?xml version="1.0"?>\n<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">${inner}</KeyContainer>`;
  const plain = (serial: string) =>
    `<KeyPackage><DeviceInfo><SerialNo>${serial}</SerialNo></DeviceInfo><Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret></Data></Key></KeyPackage>`;

  it('a hand-written plain file is read (the baseline the attacks below start from)', () => {
    const file = read(container(plain('A1') + plain('A2')));
    assert.deepEqual(file.tokens.map((x) => x.serial), ['A1', 'A2']);
  });
  it('refuses DTDs, entity expansion (billion laughs), external entities', () => {
    const laughs = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>${container(plain('&lol2;'))}`;
    const external = `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>${container(plain('&xxe;'))}`;
    const doctypeOnly = `<?xml version="1.0"?><!DOCTYPE KeyContainer SYSTEM "http://example.com/pskc.dtd">${container(plain('B1'))}`;
    for (const xml of [laughs, external, doctypeOnly]) assert.equal(codeOf(() => read(xml)), 'token_file_invalid');
  });
  it('undeclared entities stay text and make the serial invalid, never expand', () => {
    const file = read(container(plain('&xxe;')));
    assert.equal(file.tokens.length, 0);
    assert.equal(file.problems[0]?.code, 'invalid_serial');
  });
  it('refuses oversized files before parsing, and too many tokens', () => {
    const big = container(plain('C1').repeat(1));
    assert.equal(codeOf(() => read(big, { maxBytes: big.length - 1 })), 'token_file_too_large');
    assert.equal(codeOf(() => read(container(plain('D1') + plain('D2') + plain('D3')), { maxTokens: 2 })), 'token_file_too_large');
  });
  it('refuses malformed XML, other documents, other versions, deep nesting, signatures, non-UTF-8', () => {
    assert.equal(codeOf(() => read(`${container(plain('E1'))}<extra/>`)), 'token_file_invalid');
    assert.equal(codeOf(() => read('<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage>')), 'token_file_invalid');
    assert.equal(codeOf(() => read('<Other xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>')), 'token_file_invalid');
    assert.equal(codeOf(() => read('<KeyContainer Version="1.0" xmlns="urn:example:not-pskc"/>')), 'token_file_invalid');
    assert.equal(codeOf(() => read(container('').replace('Version="1.0"', 'Version="2.0"'))), 'token_file_invalid');
    assert.equal(codeOf(() => read(container(`${'<a>'.repeat(200)}${'</a>'.repeat(200)}`))), 'token_file_invalid');
    assert.equal(codeOf(() => read(container('<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/>'))), 'token_file_invalid');
    assert.equal(codeOf(() => read(Buffer.concat([Buffer.from('<KeyContainer>'), Buffer.from([0xff, 0xfe]), Buffer.from('</KeyContainer>')]))), 'token_file_invalid');
    assert.equal(codeOf(() => read('')), 'token_file_invalid');
  });
});

describe('CSV', () => {
  it('hex and base32 seeds, prefixes, header, comments, SM3 and TOTP columns', (t) => {
    if (needOathtool(t)) return;
    const seed = randomSeedHex(20);
    const b32 = Buffer.from(seed, 'hex')
      .reduce((acc, b) => acc + b.toString(2).padStart(8, '0'), '')
      .match(/.{1,5}/g)
      ?.map((bits) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'[Number.parseInt(bits.padEnd(5, '0'), 2)])
      .join('');
    const csv = [
      'serial,seed,type,digits,counter|period,algorithm',
      '# a comment',
      `CSV-1,${seed},hotp,6,5,SHA1`,
      `CSV-2,${b32},totp,8,30,`,
      `CSV-3,hex:${seed},totp,6,60,SM3`,
      `"CSV-4","base32:${b32?.toLowerCase()}",hotp,6,0,sm3`,
      '',
    ].join('\r\n');
    const file = read(csv);
    assert.equal(file.format, 'csv');
    assert.deepEqual(file.problems, []);
    assert.deepEqual(
      file.tokens.map((x) => [x.serial, x.kind, x.algorithm, x.digits, x.counter, x.periodSeconds, x.seed.toString('hex') === seed]),
      [
        ['CSV-1', 'hotp', 'SHA1', 6, 5, 0, true],
        ['CSV-2', 'totp', 'SHA1', 8, 0, 30, true],
        ['CSV-3', 'totp', 'SM3', 6, 0, 60, true],
        ['CSV-4', 'hotp', 'SM3', 6, 0, 0, true],
      ],
    );
    const [first] = file.tokens;
    assert.ok(first);
    assert.equal(tokenCodeGenerator(createSecretKey(first.seed), first)(5), oathHotp(seed, 5));
  });
  it('bad rows are reported by line and column, never by a value from the file; duplicate serials too', () => {
    const seed = randomSeedHex(20);
    const file = read([`OK,${seed},hotp,6,0`, `BAD-TYPE,${seed},motp,6,0`, `SHORT,${seed}`, `WEAK,abcd,hotp,6,0`, `NOSEED,not a seed!,hotp,6,0`, `PERIOD,${seed},totp,6,0`, `ok,${seed},hotp,6,0`, `ALG,${seed},hotp,6,0,MD5`].join('\n'));
    assert.deepEqual(file.tokens.map((x) => x.serial), ['OK']);
    assert.deepEqual(
      file.problems.map((p) => [p.serial, p.code, p.reason.split(':')[0]]),
      [
        [null, 'unsupported_algorithm', 'line 2, column 3 (type)'],
        [null, 'invalid_parameter', 'line 3'],
        [null, 'weak_secret', 'line 4'],
        [null, 'missing_secret', 'line 5, column 2 (seed)'],
        [null, 'invalid_parameter', 'line 6'],
        [null, 'duplicate_serial', 'line 7, column 1 (serial)'],
        [null, 'unsupported_algorithm', 'line 8, column 6 (algorithm)'],
      ],
    );
    assert.match(file.problems[5]?.reason ?? '', /the same serial as line 1$/);
    for (const p of file.problems) assert.doesNotMatch(p.reason, /motp|MD5|not a seed|BAD-TYPE|NOSEED/);
  });
  it('a seed in the wrong column is never repeated, and a seed where the serial belongs is refused, not imported as a serial', () => {
    const raw = Buffer.from(randomSeedHex(20), 'hex');
    const hex = raw.toString('hex');
    const b32 = base32Encode(raw);
    const b64 = raw.toString('base64').replace(/=+$/, '');
    const lines = [
      `${hex},FOB-1,hotp,6,0`, // seed,serial swapped
      `${b32},FOB-2,totp,6,30`, // the same, base32
      `${b64},FOB-3,hotp,6,0`, // base64 (not a CSV encoding, still a seed)
      `FOB-4,hotp,${hex},6,0`, // seed in the type column
      `FOB-5,${hex},hotp,${hex},0`, // …the digits column
      `FOB-6,${hex},hotp,6,${b32}`, // …the counter column
      `FOB-7,${hex},hotp,6,0,${b32}`, // …the algorithm column
      `FOB-8,hotp,6,0,${hex}`, // shifted one left
      `hex:${hex},FOB-9,hotp,6,0`, // prefixed
    ];
    const file = read(lines.join('\n'));
    assert.deepEqual(file.tokens, []);
    assert.equal(file.problems.length, lines.length);
    assert.deepEqual(
      file.problems.slice(0, 3).map((p) => [p.code, p.reason.split(':')[0]]),
      [
        ['invalid_serial', 'line 1, column 1 (serial)'],
        ['invalid_serial', 'line 2, column 1 (serial)'],
        ['invalid_serial', 'line 3, column 1 (serial)'],
      ],
    );
    const text = JSON.stringify(file.problems);
    for (const encoding of [hex, hex.toUpperCase(), b32, b32.toLowerCase(), b64, raw.toString('base64')]) assert.equal(text.includes(encoding), false, encoding);
    // Not even a recognisable piece of it.
    for (const encoding of [hex, b32, b64]) assert.equal(text.toLowerCase().includes(encoding.slice(0, 12).toLowerCase()), false);
  });
});

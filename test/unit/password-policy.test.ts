import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadBlocklist, normalisePassword, PasswordPolicy, passwordLength, shippedBlocklist } from '../../src/factors/password/policy.ts';

const policy = new PasswordPolicy({ minLength: 8, maxLength: 128, blocklist: loadBlocklist(), serviceName: 'stepgate' });
const ok = (pw: string, username = 'alice') => policy.check(pw, username);
const rule = (pw: string, username = 'alice') => policy.check(pw, username)?.rule;

describe('password policy', () => {
  it('rejects 7 characters and accepts 8', () => {
    assert.equal(rule('xk4!vq9'), 'too_short');
    assert.equal(ok('xk4!vq9z'), undefined);
  });

  it('accepts 128 characters and rejects 129, never truncating', () => {
    const base = 'Tq7-'.repeat(32);
    assert.equal(passwordLength(base), 128);
    assert.equal(ok(base), undefined);
    assert.equal(rule(`${base}x`), 'too_long');
  });

  it('counts characters after NFKC, not UTF-16 units', () => {
    // Seven emoji are 14 UTF-16 units but 7 characters.
    assert.equal(rule('🐉🐉🐉🐉🐉🐉🐉'), 'too_short');
    assert.equal(ok('🐉🐉🐉🐉🐉🐉🐉🐉'), undefined);
    // The ligature "ﬀ" is two characters after NFKC.
    assert.equal(passwordLength(normalisePassword('ﬀﬀﬀﬀ')), 8);
  });

  it('treats NFKC-equivalent passwords as one password', () => {
    assert.equal(normalisePassword('ｃｏｒｒｅｃｔ ｈｏｒｓｅ'), 'correct horse');
    assert.equal(normalisePassword('Å'), normalisePassword('Å'));
    // A full-width spelling of a common password is as common.
    assert.equal(rule('ｐａｓｓｗｏｒｄ１'), 'blocklisted');
  });

  it('rejects the common passwords of the shipped list, whatever the case', () => {
    for (const pw of ['password', 'password1', 'qwertyuiop', '12345678', 'iloveyou', 'PassWord1', 'QWERTYUIOP', 'baseball']) {
      assert.equal(rule(pw), 'blocklisted', pw);
    }
  });

  it('ships at least 10,000 common passwords with a source and licence header', () => {
    const list = shippedBlocklist();
    assert.ok(list.size >= 10_000, `only ${list.size}`);
    const file = readFileSync(new URL('../../src/factors/password/data/common-passwords.txt', import.meta.url), 'utf8');
    const first = file.split('\n')[0] ?? '';
    assert.match(first, /^# source: .+licence: MIT/);
    assert.equal(list.has(first.toLowerCase()), false, 'comment lines are not passwords');
    for (const p of list) assert.equal(p, p.toLowerCase());
  });

  it('rejects the username and the service name as passwords', () => {
    assert.equal(rule('operator-7', 'operator-7'), 'matches_username');
    assert.equal(rule('Operator-7', 'operator-7'), 'matches_username');
    const named = new PasswordPolicy({ minLength: 8, maxLength: 128, blocklist: loadBlocklist(), serviceName: 'PayGate-MFA' });
    assert.equal(named.check('paygate-mfa', 'bob')?.rule, 'matches_service_name');
    assert.equal(policy.check('Stepgate', 'bob')?.rule, 'matches_service_name');
  });

  it('has no composition rules', () => {
    assert.equal(ok('correct horse battery staple'), undefined);
    assert.equal(ok('zzzzqqqqxxxxvvvv'), undefined);
    assert.equal(ok('我的密码是一只蓝色的鲸鱼'), undefined);
  });

  it('rejects unpaired surrogates (they would collide once encoded)', () => {
    assert.equal(rule('abcdefgh\ud800'), 'malformed');
  });

  it('adds an operator blocklist file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stepgate-bl-'));
    const file = join(dir, 'extra.txt');
    writeFileSync(file, '# company words\nAcmePay2026\r\nwinter-payments\n');
    const extra = new PasswordPolicy({ minLength: 8, maxLength: 128, blocklist: loadBlocklist(file), serviceName: 'stepgate' });
    assert.equal(extra.check('acmepay2026', 'bob')?.rule, 'blocklisted');
    assert.equal(extra.check('WINTER-PAYMENTS', 'bob')?.rule, 'blocklisted');
    assert.equal(extra.check('summer-payments', 'bob'), undefined);
    assert.throws(() => loadBlocklist(join(dir, 'missing.txt')), TypeError);
  });

  it('gives a reason fit for invalid_params', () => {
    assert.match(ok('short')?.message ?? '', /8/);
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { masterKeyFromBytes, SealError, Sealer } from '../../src/crypto/sealer.ts';

const AAD = 'factors.secret_sealed:fac_1';

function newKey() {
  return masterKeyFromBytes(randomBytes(32));
}

/** Replaces one base64url part of `v1.<kid>.<iv>.<ct>.<tag>` with `edit(part)`. */
function editPart(sealed: string, index: number, edit: (bytes: Buffer) => Buffer): string {
  const parts = sealed.split('.');
  parts[index] = edit(Buffer.from(parts[index] ?? '', 'base64url')).toString('base64url');
  return parts.join('.');
}

function flipFirstBit(bytes: Buffer): Buffer {
  const copy = Buffer.from(bytes);
  copy[0] = (copy[0] ?? 0) ^ 0x01;
  return copy;
}

function sealErrorCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SealError, `expected SealError, got ${String(err)}`);
    return err.code;
  }
  assert.fail('expected a SealError');
}

describe('Sealer', () => {
  it('round-trips bytes and strings, with a fresh IV each time', () => {
    const sealer = new Sealer(newKey());
    const secret = randomBytes(20);
    const a = sealer.seal(secret, AAD);
    const b = sealer.seal(secret, AAD);
    assert.notEqual(a, b);
    assert.deepEqual(sealer.unseal(a, AAD), secret);
    assert.deepEqual(sealer.unseal(b, AAD), secret);
    assert.equal(sealer.unseal(sealer.seal('JBSWY3DPEHPK3PXP', AAD), AAD).toString('utf8'), 'JBSWY3DPEHPK3PXP');
    assert.equal(sealer.unseal(sealer.seal(Buffer.alloc(0), AAD), AAD).length, 0);
  });

  it('carries the key id in every value and never the plaintext', () => {
    const key = newKey();
    const sealer = new Sealer(key);
    const sealed = sealer.seal('super-secret-seed', AAD);
    assert.match(sealed, /^v1\.[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/);
    assert.equal(Sealer.keyIdOf(sealed), key.id);
    assert.equal(sealer.currentKeyId, key.id);
    assert.ok(!sealed.includes('super-secret-seed'));
    assert.ok(!sealed.includes(Buffer.from('super-secret-seed').toString('base64url')));
  });

  it('rejects a tampered ciphertext, iv or tag', () => {
    const sealer = new Sealer(newKey());
    const sealed = sealer.seal(randomBytes(32), AAD);
    assert.equal(sealErrorCode(() => sealer.unseal(editPart(sealed, 3, flipFirstBit), AAD)), 'seal_failed');
    assert.equal(sealErrorCode(() => sealer.unseal(editPart(sealed, 2, flipFirstBit), AAD)), 'seal_failed');
    assert.equal(sealErrorCode(() => sealer.unseal(editPart(sealed, 4, flipFirstBit), AAD)), 'seal_failed');
    // Truncated tag / iv and extra ciphertext bytes.
    assert.equal(sealErrorCode(() => sealer.unseal(editPart(sealed, 4, (b) => b.subarray(0, 12)), AAD)), 'seal_failed');
    assert.equal(sealErrorCode(() => sealer.unseal(editPart(sealed, 2, (b) => b.subarray(0, 8)), AAD)), 'seal_failed');
    assert.equal(sealErrorCode(() => sealer.unseal(editPart(sealed, 3, (b) => Buffer.concat([b, Buffer.from([0])])), AAD)), 'seal_failed');
  });

  it('binds a value to its associated data (a value copied to another row does not unseal)', () => {
    const sealer = new Sealer(newKey());
    const sealed = sealer.seal('seed', 'factors.secret_sealed:fac_1');
    assert.equal(sealErrorCode(() => sealer.unseal(sealed, 'factors.secret_sealed:fac_2')), 'seal_failed');
    assert.equal(sealErrorCode(() => sealer.unseal(sealed, '')), 'seal_failed');
  });

  it('rejects malformed values', () => {
    const sealer = new Sealer(newKey());
    for (const bad of ['', 'v1', 'v2.a.b.c.d', 'v1.a.b.c', 'v1.a.b.c.d.e', 'not sealed at all']) {
      assert.equal(sealErrorCode(() => sealer.unseal(bad, AAD)), 'seal_failed', bad);
    }
    assert.equal(Sealer.keyIdOf('v2.a.b.c.d'), undefined);
  });

  it('refuses a value sealed under an unknown key, and a forged key id', () => {
    const a = new Sealer(newKey());
    const b = new Sealer(newKey());
    const sealed = a.seal('seed', AAD);
    assert.equal(sealErrorCode(() => b.unseal(sealed, AAD)), 'seal_failed');
    // Relabelling the value with b's key id does not help: GCM authentication fails.
    const relabelled = sealed.split('.');
    relabelled[1] = b.currentKeyId;
    assert.equal(sealErrorCode(() => b.unseal(relabelled.join('.'), AAD)), 'seal_failed');
  });

  it('unseals values under previous keys after rotation, and seals only under the current key', () => {
    const oldKey = newKey();
    const newer = newKey();
    const before = new Sealer(oldKey).seal('seed', AAD);
    const rotated = new Sealer(newer, [oldKey]);
    assert.equal(rotated.unseal(before, AAD).toString('utf8'), 'seed');
    const after = rotated.seal('seed', AAD);
    assert.equal(Sealer.keyIdOf(after), newer.id);
    // Once the old key is dropped, old values are unreadable and new ones are fine.
    const onlyNew = new Sealer(newer);
    assert.equal(onlyNew.unseal(after, AAD).toString('utf8'), 'seed');
    assert.equal(sealErrorCode(() => onlyNew.unseal(before, AAD)), 'seal_failed');
  });

  it('derives the key id from the key and rejects keys that are not 32 bytes', () => {
    const bytes = randomBytes(32);
    assert.equal(masterKeyFromBytes(bytes).id, masterKeyFromBytes(Buffer.from(bytes)).id);
    assert.notEqual(masterKeyFromBytes(bytes).id, newKey().id);
    assert.throws(() => masterKeyFromBytes(randomBytes(16)), TypeError);
    assert.throws(() => masterKeyFromBytes(randomBytes(33)), TypeError);
  });

  it('derives purpose-bound subkeys that change with the master key', () => {
    const key = newKey();
    const one = new Sealer(key).deriveKey('sms').export();
    assert.deepEqual(new Sealer(key).deriveKey('sms').export(), one);
    assert.notDeepEqual(new Sealer(key).deriveKey('login').export(), one);
    assert.notDeepEqual(new Sealer(newKey()).deriveKey('sms').export(), one);
  });
});

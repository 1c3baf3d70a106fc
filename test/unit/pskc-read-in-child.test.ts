import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type AppError, isAppError } from '../../src/errors/app-error.ts';
import { readTokenFile, type ReadTokenFileOptions } from '../../src/pskc/index.ts';
import { readTokenFileInChild, readerHeapLimitMb } from '../../src/pskc/read-token-file-in-child.ts';
import { needPskc, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';

const NOW = new Date(Date.UTC(2026, 0, 15, 12));
const PSK = '00112233445566778899aabbccddeeff';
const options: ReadTokenFileOptions = { now: NOW, maxBytes: 64 * 1024 * 1024, maxTokens: 100_000, maxPbkdf2Iterations: 1_000_000 };

async function errorOf(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (err) {
    if (isAppError(err)) return err;
    throw err;
  }
  assert.fail('no error');
}

describe('readTokenFileInChild (the file read in a child process with a heap of its own)', () => {
  it('gives exactly what readTokenFile gives: every field, Date fields, seeds as Buffers', async (t) => {
    if (needPskc(t)) return;
    const seeds = [randomSeedHex(20), randomSeedHex(32), randomSeedHex(16)];
    const data = writePskc({
      encryption: 'psk', cipher: 'aes128-cbc', key_hex: PSK, fields: ['secret', 'counter'],
      tokens: [
        { serial: 'W-1', secret_hex: seeds[0] as string, algorithm: 'hotp', counter: 7, manufacturer: 'ACME & Söhne', expiry_date: '2030-01-01T00:00:00Z' },
        { serial: 'W-2', secret_hex: seeds[1] as string, algorithm: 'totp', suite: 'HMAC-SHA256', digits: 8, time_interval: 60, time_drift: -2 },
        { serial: 'W-3', secret_hex: seeds[2] as string, algorithm: 'totp', suite: 'SM3', time_interval: 60 },
      ],
    });
    const inline = readTokenFile(data, { ...options, psk: Buffer.from(PSK, 'hex') });
    const psk = Buffer.from(PSK, 'hex');
    const viaWorker = await readTokenFileInChild(data, { ...options, psk });
    assert.deepEqual(viaWorker, inline);
    for (const token of viaWorker.tokens) assert.ok(Buffer.isBuffer(token.seed));
    assert.ok(viaWorker.tokens[0]?.validUntil instanceof Date);
    assert.deepEqual(viaWorker.tokens.map((x) => x.seed.toString('hex')), seeds);
    assert.equal(psk.toString('hex'), PSK, "the caller's key is not touched (the child wipes its own copy)");
    // The seeds are views of one buffer the caller owns: wiping them wipes it.
    for (const token of viaWorker.tokens) token.seed.fill(0);
    assert.ok(viaWorker.tokens.every((x) => x.seed.every((b) => b === 0)));
  });

  it('refusals come back as the same AppErrors (code, detail, invalid params)', async () => {
    const cases: [string, Partial<ReadTokenFileOptions>][] = [
      ['<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><KeyContainer/>', {}],
      ['serial,seed,type,digits,counter|period,algorithm\nX-1,zz,hotp,6,0,SHA1\n', {}],
      ['', {}],
      ['serial,seed,type,digits,counter|period,algorithm\nX-1,00112233445566778899,hotp,6,0,SHA1\nX-2,00112233445566778899,hotp,6,0,SHA1\n', { maxTokens: 1 }],
      [`${'#'.repeat(3000)}\n`, { maxBytes: 2048 }],
    ];
    for (const [text, extra] of cases) {
      const data = Buffer.from(text, 'utf8');
      let inline: AppError | undefined;
      let file: unknown;
      try {
        file = readTokenFile(data, { ...options, ...extra });
      } catch (err) {
        if (!isAppError(err)) throw err;
        inline = err;
      }
      if (inline === undefined) {
        assert.deepEqual(await readTokenFileInChild(data, { ...options, ...extra }), file, text);
        continue;
      }
      const viaChild = await errorOf(readTokenFileInChild(data, { ...options, ...extra }));
      assert.deepEqual({ code: viaChild.code, status: viaChild.status, detail: viaChild.detail, invalidParams: viaChild.invalidParams }, { code: inline.code, status: inline.status, detail: inline.detail, invalidParams: inline.invalidParams }, text);
    }
  });

  it('a file that needs more memory than the reader may use is refused (413); the calling process carries on', async () => {
    // ~12 MB of CSV rows (200,000 tokens), read with a heap big enough to start in but
    // far too small for the file's text and rows.
    const rows = Array.from({ length: 200_000 }, (_, i) => `OOM-${i},${'ab'.repeat(20)},hotp,6,0,SHA1`).join('\n');
    const data = Buffer.from(`serial,seed,type,digits,counter|period,algorithm\n${rows}\n`, 'utf8');
    const err = await errorOf(readTokenFileInChild(data, { ...options, maxTokens: 200_000 }, { maxHeapMb: 24 }));
    assert.equal(err.code, 'token_file_too_large');
    assert.equal(err.status, 413);
    // And with the heap the size rule gives, the same file reads.
    const ok = await readTokenFileInChild(data, { ...options, maxTokens: 200_000 });
    assert.equal(ok.tokens.length, 200_000);
  });

  it('the reader heap limit grows with the file, within bounds', () => {
    assert.equal(readerHeapLimitMb(0), 256);
    assert.ok(readerHeapLimitMb(76 * 2 ** 20) >= 1024);
    assert.equal(readerHeapLimitMb(2 ** 40), 16_384);
  });
});

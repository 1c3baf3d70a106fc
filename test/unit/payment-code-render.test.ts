import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { crc32, inflateSync } from 'node:zlib';
import QRCode from 'qrcode';
import { monochromePng, qrPng } from '../../src/payment-code/render.ts';
import { needTool } from '../helpers/env.ts';
import { zbar } from '../helpers/payment-code.ts';

/** Reads back a PNG written by monochromePng: its chunks (CRCs checked), size and pixels (true = white). */
function readPng(png: Buffer): { width: number; height: number; bitDepth: number; colourType: number; white: (x: number, y: number) => boolean } {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunks: { type: string; data: Buffer }[] = [];
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at);
    const type = png.toString('ascii', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    assert.equal(png.readUInt32BE(at + 8 + length), crc32(data, crc32(Buffer.from(type, 'ascii'))), `${type} CRC`);
    chunks.push({ type, data });
    at += 12 + length;
  }
  assert.deepEqual(chunks.map((c) => c.type), ['IHDR', 'IDAT', 'IEND']);
  const ihdr = (chunks[0] as { data: Buffer }).data;
  const width = ihdr.readUInt32BE(0);
  const height = ihdr.readUInt32BE(4);
  const raw = inflateSync((chunks[1] as { data: Buffer }).data);
  const rowBytes = Math.ceil(width / 8);
  assert.equal(raw.length, (rowBytes + 1) * height);
  for (let y = 0; y < height; y++) assert.equal(raw[y * (rowBytes + 1)], 0, 'filter type none');
  return {
    width,
    height,
    bitDepth: ihdr[8] as number,
    colourType: ihdr[9] as number,
    white: (x, y) => (((raw[y * (rowBytes + 1) + 1 + (x >> 3)] as number) >> (7 - (x & 7))) & 1) === 1,
  };
}

describe('payment-code pictures (render.ts)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stepgate-pc-render-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('monochromePng: 1-bit greyscale, black modules on white, the quiet zone white, each module scale × scale pixels', () => {
    // 3 × 3: a diagonal of dark modules.
    const png = readPng(monochromePng(3, [1, 0, 0, 0, 1, 0, 0, 0, 1], 2, 3));
    assert.equal(png.width, (3 + 4) * 3);
    assert.equal(png.height, png.width);
    assert.equal(png.bitDepth, 1);
    assert.equal(png.colourType, 0);
    for (let y = 0; y < png.height; y++) {
      for (let x = 0; x < png.width; x++) {
        const mx = Math.floor(x / 3) - 2;
        const my = Math.floor(y / 3) - 2;
        const dark = mx >= 0 && mx < 3 && my === mx;
        assert.equal(png.white(x, y), !dark, `pixel ${x},${y}`);
      }
    }
  });

  it('monochromePng refuses a matrix that does not match its size, and odd scales or margins', () => {
    assert.throws(() => monochromePng(3, [1, 0], 4, 1), TypeError);
    assert.throws(() => monochromePng(1, [1], 4, 0), TypeError);
    assert.throws(() => monochromePng(1, [1], -1, 2), TypeError);
    assert.throws(() => monochromePng(1, [1], 1.5, 2), TypeError);
  });

  it('qrPng draws exactly the symbol the qrcode package computes, with a 4-module quiet zone', async () => {
    const text = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJzaF9hYmMiLCJsaW0iOiIxMjAuMDAifQ.c2lnbmF0dXJl';
    const { modules } = QRCode.create(text, { errorCorrectionLevel: 'M' });
    const png = readPng(await qrPng(text, 2));
    assert.equal(png.width, (modules.size + 8) * 2);
    for (let my = -4; my < modules.size + 4; my++) {
      for (let mx = -4; mx < modules.size + 4; mx++) {
        const inside = mx >= 0 && my >= 0 && mx < modules.size && my < modules.size;
        const dark = inside && modules.get(my, mx) === 1;
        assert.equal(png.white((mx + 4) * 2 + 1, (my + 4) * 2), !dark, `module ${mx},${my}`);
      }
    }
  });

  it('zbarimg reads the QR of 18 digits and of a long signed payload', async (t) => {
    if (needTool(t, 'zbarimg', 'zbar-tools')) return;
    const digits = '181234567890123456';
    const payload = `${'eyJhbGciOiJFZERTQSIsImtpZCI6InBjcS0xIiwidHlwIjoicGNxcitqd3QifQ'}.${Buffer.from(JSON.stringify({ sub: 'sh_abcdefghijklmnopqrstuv', jti: 'n'.repeat(22), lim: '120.00', cur: 'CNY', payee: 'shop-42', iss: 'https://pay.example', iat: 1764600000, exp: 1764600060 })).toString('base64url')}.${'S'.repeat(86)}`;
    assert.deepEqual(await zbar(await qrPng(digits, 6), dir, 'digits'), [digits]);
    assert.deepEqual(await zbar(await qrPng(payload, 3), dir, 'payload'), [payload]);
  });
});

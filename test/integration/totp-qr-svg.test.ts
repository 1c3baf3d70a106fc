import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { otpauthUri, qrImages } from '../../src/factors/totp/index.ts';
import { needTool } from '../helpers/env.ts';

const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('TOTP QR code as SVG', () => {
  it('renders in Chromium (on a dark page) to an image zbarimg decodes to the otpauth URI', async (t) => {
    if (needTool(t, 'chromium', 'chromium') || needTool(t, 'zbarimg', 'zbar-tools')) return;
    const uri = otpauthUri({ issuer: 'Stepgate', accountName: 'alice', secret: randomBytes(32), params: { algorithm: 'SHA256', digits: 8, period: 60 } });
    const { svg } = await qrImages(uri);
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_FLAGS });
    try {
      const page = await browser.newPage({ viewport: { width: 400, height: 400 } });
      // A black page: the code must bring its own white background and quiet zone.
      await page.setContent(`<body style="margin:0;background:#000"><div id="qr" style="width:370px;height:370px">${svg}</div></body>`);
      const png = await page.locator('#qr').screenshot();
      const r = spawnSync('zbarimg', ['--quiet', '--raw', '-Sqrcode.enable', '-'], { input: png, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), uri);
    } finally {
      await browser.close();
    }
  });
});

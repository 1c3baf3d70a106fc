import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import { createUser } from '../../src/flows/users.ts';
import { base32Encode } from '../../src/otp/base32.ts';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool } from '../helpers/hardware-tokens.ts';
import { cookieFrom, hiddenField } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

/**
 * A vendor file with its columns or elements mixed up puts a seed where a serial, a type or
 * an algorithm belongs. The import refuses it — and its report (API problem, console page,
 * CLI output), the logs, the audit log and the import history name the line and column,
 * never the value: no encoding of the seed appears anywhere.
 */

const PASSWORD = 'a long enough passphrase 7';
const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);

const raw = randomBytes(20);
const hex = raw.toString('hex');
const b32 = base32Encode(raw);
const b64 = raw.toString('base64');
/** Every way the seed could be written out, and a recognisable piece of each. */
const ENCODINGS = [hex, hex.toUpperCase(), b32, b32.toLowerCase(), b64, b64.replace(/=+$/, ''), raw.toString('base64url')];
const PIECES = ENCODINGS.map((e) => e.slice(0, 16));

function leaks(text: string): string[] {
  const lower = text.toLowerCase();
  return [...ENCODINGS, ...PIECES].filter((e) => text.includes(e) || lower.includes(e.toLowerCase()));
}

const MISORDERED_CSV = [
  'serial,seed,type,digits,counter|period,algorithm',
  `${hex},FOB-0001,hotp,6,0,SHA1`, // serial and seed swapped
  `${b32},FOB-0002,totp,6,30,`, // the same, base32
  `FOB-0003,hotp,${hex},6,0`, // seed in the type column
  `FOB-0004,hotp,6,0,${b32}`, // columns shifted: seed in the algorithm column
  `FOB-0005,${hex},hotp,6,0,${b32}`, // …and a second copy in the algorithm column
].join('\n');

const MIXED_PSKC = `<?xml version="1.0"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
<KeyPackage><DeviceInfo><SerialNo>${hex}</SerialNo></DeviceInfo><Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><Data><Secret><PlainValue>${b64}</PlainValue></Secret></Data></Key></KeyPackage>
<KeyPackage><DeviceInfo><SerialNo>FOB-0007</SerialNo></DeviceInfo><Key Algorithm="${b64}"><AlgorithmParameters><Suite>${b32}</Suite></AlgorithmParameters><Data><Secret><PlainValue>${b64}</PlainValue></Secret></Data></Key></KeyPackage>
<KeyPackage><DeviceInfo><SerialNo>FOB-0008</SerialNo></DeviceInfo><Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><AlgorithmParameters><Suite>${b32}</Suite></AlgorithmParameters><Data><Secret><PlainValue>${b64}</PlainValue></Secret></Data></Key></KeyPackage>
</KeyContainer>`;

for (const dialect of testDialects()) {
  describe(`hardware-token import reports never repeat a seed (${dialect})`, () => {
    let t: TestGateway;
    let api: { cookie: string; csrf: string };
    let secret: Buffer;
    let step = 0;

    before(async () => {
      t = await createTestGateway({ dialect, clock: new FixedClock(T0) });
      const root = await createUser(t.gw, { username: 'root', password: PASSWORD, roles: ['admin'] }, { actor: null });
      secret = (await insertActiveTotp(t.gw, root.id)).secret;
      const res = await t.http().post('/v1/login').send({ username: 'root', password: PASSWORD }).expect(200);
      api = { cookie: `stepgate_session=${cookieFrom(res)}`, csrf: res.body.csrf_token as string };
    });
    after(async () => t.close());

    async function everythingStored(): Promise<string> {
      const audit = await t.gw.store.db.selectFrom('audit_log').selectAll().execute();
      const history = await t.gw.store.db.selectFrom('hardware_token_imports').selectAll().execute();
      const tokens = await t.gw.store.db.selectFrom('hardware_tokens').select(['serial', 'manufacturer', 'model']).execute();
      return JSON.stringify({ audit, history, tokens });
    }

    it('the admin API: a misordered CSV and a mixed-up PSKC file are refused by line/column and position, the seed nowhere', async () => {
      const csv = await t.http().post('/v1/admin/hardware-tokens/imports?file_name=vendor.csv').set('Cookie', api.cookie).set('X-CSRF-Token', api.csrf).set('Content-Type', 'text/csv').send(Buffer.from(MISORDERED_CSV));
      assert.equal(csv.status, 400, csv.text);
      assert.equal(csv.body.code, 'token_import_rejected');
      assert.deepEqual(
        csv.body.invalid_params.map((p: { pointer: string; reason: string }) => [p.pointer, p.reason.split(': ').slice(0, 2).join(': ')]),
        [
          ['/tokens/0', 'invalid_serial: line 2, column 1 (serial)'],
          ['/tokens/1', 'invalid_serial: line 3, column 1 (serial)'],
          ['/tokens/2', 'unsupported_algorithm: line 4, column 3 (type)'],
          ['/tokens/3', 'unsupported_algorithm: line 5, column 3 (type)'],
          ['/tokens/4', 'unsupported_algorithm: line 6, column 6 (algorithm)'],
        ],
      );
      assert.match(csv.body.invalid_params[0].reason, /looks like a seed/);
      assert.deepEqual(leaks(csv.text), []);

      const pskc = await t.http().post('/v1/admin/hardware-tokens/imports').set('Cookie', api.cookie).set('X-CSRF-Token', api.csrf).set('Content-Type', 'application/pskc+xml').send(Buffer.from(MIXED_PSKC));
      assert.equal(pskc.status, 400, pskc.text);
      assert.equal(pskc.body.code, 'token_import_rejected');
      assert.deepEqual(
        pskc.body.invalid_params.map((p: { pointer: string; reason: string }) => p.reason.split(':').slice(0, 2).join(':')),
        ['invalid_serial: DeviceInfo/SerialNo (or the Key Id) looks like a seed, not a serial', 'serial FOB-0007: unsupported_algorithm', 'serial FOB-0008: unsupported_algorithm'],
      );
      assert.deepEqual(leaks(pskc.text), []);
      // Malformed XML with the seed as an element name: the parser's message is not passed on.
      const broken = await t.http().post('/v1/admin/hardware-tokens/imports').set('Cookie', api.cookie).set('X-CSRF-Token', api.csrf).set('Content-Type', 'application/pskc+xml').send(Buffer.from(MIXED_PSKC.replace('<KeyPackage>', `<${b32}>`)));
      assert.equal(broken.status, 400);
      assert.equal(broken.body.code, 'token_file_invalid');
      assert.deepEqual(leaks(broken.text), []);

      assert.deepEqual(leaks(t.logs.text), []);
      assert.deepEqual(leaks(await everythingStored()), []);
      const failed = await t.gw.store.db.selectFrom('audit_log').select('type').where('type', '=', 'hardware_token.import_failed').execute();
      assert.equal(failed.length, 3);
    });

    it('the console upload page shows the same report, the seed nowhere on it', async (tc) => {
      if (needOathtool(tc)) return;
      step += 1;
      t.clock.set(T0 + step * 30_000);
      const verified = await t
        .http()
        .post('/console/verify')
        .set('Cookie', api.cookie)
        .type('form')
        .send({ _csrf: api.csrf, code: oathtoolTotp(secret, DEFAULT_TOTP, Math.floor(t.clock.now().getTime() / 1000)), next: '/console' });
      assert.equal(verified.status, 303, verified.text);
      const cookie = `stepgate_session=${cookieFrom(verified)}`;
      const csrf = hiddenField((await t.http().get('/console/tokens').set('Cookie', cookie).expect(200)).text, '_csrf');
      for (const [name, body] of [['vendor.csv', MISORDERED_CSV], ['vendor.pskc.xml', MIXED_PSKC]] as const) {
        const page = await t.http().post(`/console/tokens/import?_csrf=${encodeURIComponent(csrf)}`).set('Cookie', cookie).field('reason', 'March delivery').attach('file', Buffer.from(body), name);
        assert.equal(page.status, 400, page.text.slice(0, 500));
        assert.match(page.text, name.endsWith('.csv') ? /line 2, column 1 \(serial\)/ : /FOB-0007/);
        assert.deepEqual(leaks(page.text), []);
      }
      assert.deepEqual(leaks(t.logs.text), []);
      assert.deepEqual(leaks(await everythingStored()), []);
    });

    it('the CLI prints the same report, the seed nowhere in its output', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'stepgate-echo-'));
      try {
        for (const [name, body] of [['vendor.csv', MISORDERED_CSV], ['vendor.xml', MIXED_PSKC]] as const) {
          const file = join(dir, name);
          writeFileSync(file, body);
          for (const json of [[], ['--json']]) {
            const run = await runCli(['tokens', 'import', file, ...json], cliEnv(t, { STEPGATE_LOG_LEVEL: 'debug' }));
            assert.equal(run.status, 1, run.stderr);
            assert.match(run.stdout + run.stderr, /token_import_rejected/);
            assert.deepEqual(leaks(run.stdout + run.stderr), []);
          }
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      assert.deepEqual(leaks(await everythingStored()), []);
    });
  });
}

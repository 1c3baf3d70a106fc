import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createUser } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * RFC 8259 §8.1: JSON exchanged between systems is UTF-8, without a byte order mark. A JSON
 * or form body whose declared charset is not utf-8, or that starts with a byte order mark
 * (UTF-8's included), UTF-7's signature, or (JSON) the NUL bytes of UTF-16/32, is refused
 * with 415 problem+json `unsupported_media_type` before it is decoded — even when it holds
 * the right password — and nothing is read, charged or written.
 */

const PASSWORD = 'a long enough passphrase 7';

function utf16be(s: string): Buffer {
  return Buffer.from(s, 'utf16le').swap16();
}
function utf32(s: string, le: boolean): Buffer {
  const cps = [...s].map((c) => c.codePointAt(0) as number);
  const b = Buffer.alloc(cps.length * 4);
  for (const [i, cp] of cps.entries()) {
    if (le) b.writeUInt32LE(cp, i * 4);
    else b.writeUInt32BE(cp, i * 4);
  }
  return b;
}
/** UTF-7 (RFC 2152) of `s`, every non-alphanumeric character base64-encoded as UTF-16BE: `{"a":…}` → `+AHsAIg-a…`. */
function utf7(s: string): Buffer {
  let out = '';
  for (const ch of s) {
    if (/[A-Za-z0-9 ]/.test(ch)) out += ch;
    else out += `+${utf16be(ch).toString('base64').replace(/=+$/, '')}-`;
  }
  return Buffer.from(out, 'latin1');
}

/** What the assertions read of a problem+json answer (undefined fields when it is not one). */
type Problem = { code: string; invalid_params: { pointer: string; reason: string }[] };

const BOM = {
  'UTF-8': Buffer.from([0xef, 0xbb, 0xbf]),
  'UTF-16LE': Buffer.from([0xff, 0xfe]),
  'UTF-16BE': Buffer.from([0xfe, 0xff]),
  'UTF-32LE': Buffer.from([0xff, 0xfe, 0x00, 0x00]),
  'UTF-32BE': Buffer.from([0x00, 0x00, 0xfe, 0xff]),
  'UTF-7': Buffer.from('+/v8', 'latin1'),
};

for (const dialect of testDialects()) {
  describe(`JSON and form bodies must be UTF-8 (${dialect})`, () => {
    let t: TestGateway;
    let server: Server;
    const login = JSON.stringify({ username: 'ursula', password: PASSWORD });

    /** The bytes exactly as given (a client library would re-encode them). */
    async function post(path: string, contentType: string, body: Buffer): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string; body: Problem }> {
      const { port } = server.address() as AddressInfo;
      return new Promise((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-type': contentType, 'content-length': body.length } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed as Problem });
          });
        });
        req.on('error', reject);
        req.end(body);
      });
    }
    async function auditCount(): Promise<number> {
      return Number((await t.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
    }
    async function sessionCount(): Promise<number> {
      return Number((await t.gw.store.db.selectFrom('sessions').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
    }

    before(async () => {
      t = await createTestGateway({ dialect });
      server = createServer(t.app);
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      await createUser(t.gw, { username: 'ursula', password: PASSWORD }, { actor: 'test' });
    });
    after(async () => {
      server.close();
      await t.close();
    });

    it('good path: UTF-8, with no charset or charset=utf-8 (any case, quoted, or the spelling utf8), signs in', async () => {
      for (const ct of ['application/json', 'application/json; charset=utf-8', 'application/json; charset=UTF-8', 'application/json;charset="utf-8"', 'application/json; charset=utf8']) {
        const res = await post('/v1/login', ct, Buffer.from(login, 'utf8'));
        assert.equal(res.status, 200, `${ct}: ${res.text}`);
      }
      // Non-ASCII text in UTF-8 is of course fine (an unknown user: 401, not 415).
      const res = await post('/v1/login', 'application/json', Buffer.from(JSON.stringify({ username: 'ürsülä 用户', password: PASSWORD }), 'utf8'));
      assert.equal(res.status, 401, res.text);
    });

    it('JSON in UTF-16, UTF-32 or UTF-7 — declared, marked by a BOM, or neither — and UTF-8 with a BOM are 415, even with the right password', async () => {
      const cases: [string, string, Buffer][] = [
        ['UTF-16LE declared', 'application/json; charset=utf-16le', Buffer.from(login, 'utf16le')],
        ['UTF-16 declared, with BOM', 'application/json; charset=utf-16', Buffer.concat([BOM['UTF-16LE'], Buffer.from(login, 'utf16le')])],
        ['UTF-16BE declared', 'application/json; charset=utf-16be', utf16be(login)],
        ['UTF-16LE BOM', 'application/json', Buffer.concat([BOM['UTF-16LE'], Buffer.from(login, 'utf16le')])],
        ['UTF-16BE BOM', 'application/json', Buffer.concat([BOM['UTF-16BE'], utf16be(login)])],
        ['UTF-16LE, no BOM', 'application/json', Buffer.from(login, 'utf16le')],
        ['UTF-16BE, no BOM', 'application/json', utf16be(login)],
        ['UTF-32 declared', 'application/json; charset=utf-32', utf32(login, true)],
        ['UTF-32LE BOM', 'application/json', Buffer.concat([BOM['UTF-32LE'], utf32(login, true)])],
        ['UTF-32BE BOM', 'application/json', Buffer.concat([BOM['UTF-32BE'], utf32(login, false)])],
        ['UTF-32LE, no BOM', 'application/json', utf32(login, true)],
        ['UTF-32BE, no BOM', 'application/json', utf32(login, false)],
        ['UTF-7 declared', 'application/json; charset=utf-7', utf7(login)],
        ['UTF-7 signature', 'application/json', Buffer.concat([BOM['UTF-7'], Buffer.from(login, 'latin1')])],
        ['UTF-8 BOM', 'application/json', Buffer.concat([BOM['UTF-8'], Buffer.from(login, 'utf8')])],
        ['UTF-8 BOM, charset=utf-8', 'application/json; charset=utf-8', Buffer.concat([BOM['UTF-8'], Buffer.from(login, 'utf8')])],
        ['latin1 declared', 'application/json; charset=latin1', Buffer.from(login, 'latin1')],
        ['+json type, UTF-16 declared', 'application/merge-patch+json; charset=utf-16le', Buffer.from(login, 'utf16le')],
      ];
      const auditBefore = await auditCount();
      const sessionsBefore = await sessionCount();
      for (const [label, ct, body] of cases) {
        const res = await post('/v1/login', ct, body);
        assert.equal(res.status, 415, `${label}: ${res.status} ${res.text}`);
        assert.match(String(res.headers['content-type']), /^application\/problem\+json/, label);
        assert.equal(res.body.code, 'unsupported_media_type', label);
        assert.deepEqual(
          res.body.invalid_params.map((p) => p.pointer),
          [''],
          label,
        );
        assert.match(res.body.invalid_params[0]?.reason ?? '', /UTF-8/, label);
        assert.equal(res.headers['set-cookie'], undefined, `${label}: no session`);
      }
      assert.equal(await sessionCount(), sessionsBefore, 'no sign-in');
      assert.equal(await auditCount(), auditBefore, 'nothing audited: the body never reached a route');
    });

    it('the same on an authenticated API route and an unknown route (refused before routing)', async () => {
      const a = await post('/v1/admin/users', 'application/json; charset=utf-16le', Buffer.from('{"username":"x"}', 'utf16le'));
      assert.equal(a.status, 415, a.text);
      const b = await post('/no/such/route', 'application/json', Buffer.concat([BOM['UTF-8'], Buffer.from('{}')]));
      assert.equal(b.status, 415, b.text);
      assert.equal(b.body.code, 'unsupported_media_type');
    });

    it('form bodies: a charset other than utf-8, or a byte order mark, is 415; a UTF-8 form reaches the page', async () => {
      const form = `username=ursula&password=${encodeURIComponent(PASSWORD)}`;
      const ok = await post('/login', 'application/x-www-form-urlencoded', Buffer.from(form));
      assert.notEqual(ok.status, 415, ok.text);
      assert.notEqual(ok.status, 500, ok.text);
      const cases: [string, string, Buffer][] = [
        ['iso-8859-1 declared', 'application/x-www-form-urlencoded; charset=iso-8859-1', Buffer.from('username=%FCrsula&password=x', 'latin1')],
        ['UTF-16 declared', 'application/x-www-form-urlencoded; charset=utf-16le', Buffer.from(form, 'utf16le')],
        ['UTF-8 BOM', 'application/x-www-form-urlencoded', Buffer.concat([BOM['UTF-8'], Buffer.from(form)])],
        ['UTF-16LE BOM', 'application/x-www-form-urlencoded', Buffer.concat([BOM['UTF-16LE'], Buffer.from(form, 'utf16le')])],
        ['UTF-7 signature', 'application/x-www-form-urlencoded', Buffer.concat([BOM['UTF-7'], Buffer.from(form)])],
      ];
      for (const [label, ct, body] of cases) {
        const res = await post('/login', ct, body);
        assert.equal(res.status, 415, `${label}: ${res.status} ${res.text}`);
        assert.equal(res.body.code, 'unsupported_media_type', label);
        assert.equal(res.headers['set-cookie'], undefined, `${label}: no session`);
      }
    });

    it('bad input that is UTF-8 keeps its own answers (invalid bytes 400, not 415)', async () => {
      const bad = await post('/v1/login', 'application/json', Buffer.concat([Buffer.from('{"username":"'), Buffer.from([0xc0, 0x80]), Buffer.from('"}')]));
      assert.equal(bad.status, 400, bad.text);
      assert.equal(bad.body.code, 'invalid_json');
      // A body that only starts like "+/v" but is not the signature is just bad JSON.
      const plus = await post('/v1/login', 'application/json', Buffer.from('+/vx'));
      assert.equal(plus.status, 400, plus.text);
    });

    it('the OpenAPI document says so', async () => {
      const doc = (await t.http().get('/openapi.json').expect(200)).body as {
        info: { description: string };
        paths: Record<string, Record<string, { requestBody?: { description?: string }; responses: Record<string, { description: string }> }>>;
      };
      assert.match(doc.info.description, /UTF-8.*415/s);
      const op = doc.paths['/v1/login']?.post;
      assert.ok(op?.requestBody?.description?.includes('byte order mark'));
      assert.match(op?.responses['415']?.description ?? '', /unsupported_media_type.*UTF-8/);
    });
  });
}

import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type request from 'supertest';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { createUser, type Role } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, needPskc, oathHotp, oathTotp, type PskcToken, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'a long enough passphrase 7';
const PSK = '0123456789abcdef0123456789abcdef';
const FILE_PASSWORD = 'transport password';

interface Session {
  agent: request.Agent;
  csrf: string;
  userId: string;
}

for (const dialect of testDialects()) {
  describe(`hardware-token import (${dialect})`, () => {
    let t: TestGateway;
    const as: Record<string, Session> = {};
    let aliceId: string;

    async function signIn(username: string): Promise<Session> {
      const agent = t.agent();
      const res = await agent.post('/v1/login').send({ username, password: PASSWORD });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return { agent, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
    }

    function upload(s: Session, file: Buffer | string, headers: Record<string, string> = {}, query = '') {
      let r = s.agent.post(`/v1/admin/hardware-tokens/imports${query}`).set('X-CSRF-Token', s.csrf).set('Content-Type', 'application/pskc+xml');
      for (const [k, v] of Object.entries(headers)) r = r.set(k, v);
      return r.send(Buffer.isBuffer(file) ? file : Buffer.from(file));
    }

    async function tokenCount(): Promise<number> {
      const r = await t.gw.store.db.selectFrom('hardware_tokens').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      return Number(r.n);
    }

    before(async () => {
      t = await createTestGateway({ dialect });
      for (const [name, roles] of [['root', ['admin']], ['desk', ['helpdesk']], ['audit', ['auditor']], ['alice', []]] as [string, Role[]][]) {
        const u = await createUser(t.gw, { username: name, password: PASSWORD, roles }, { actor: 'test' });
        if (name === 'alice') aliceId = u.id;
      }
      for (const name of ['root', 'desk', 'audit', 'alice']) as[name] = await signIn(name);
    });
    after(async () => {
      await t.close();
    });

    const encryptions = [
      ['plain', {}, {}],
      ['PSK aes128-cbc', { encryption: 'psk', cipher: 'aes128-cbc', key_hex: PSK }, { 'X-Token-File-Key': PSK }],
      ['PSK aes256-cbc', { encryption: 'psk', cipher: 'aes256-cbc', key_hex: PSK + PSK }, { 'X-Token-File-Key': PSK + PSK }],
      ['PSK kw-aes128', { encryption: 'psk', cipher: 'kw-aes128', key_hex: PSK }, { 'X-Token-File-Key': PSK }],
      ['PBKDF2', { encryption: 'pbkdf2', password: FILE_PASSWORD, iterations: 1000 }, { 'X-Token-File-Password': FILE_PASSWORD }],
    ] as const;

    for (const [label, enc, headers] of encryptions) {
      it(`${label}: a python-pskc file is imported, and each token then accepts oathtool's current code`, async (tc) => {
        if (needPskc(tc) || needOathtool(tc)) return;
        const tag = label.replace(/[^A-Za-z0-9]/g, '').toUpperCase();
        const hotpSeed = randomSeedHex();
        const totpSeed = randomSeedHex(32);
        const tokens: PskcToken[] = [
          { serial: `${tag}-H`, secret_hex: hotpSeed, algorithm: 'hotp', counter: 41 },
          { serial: `${tag}-T`, secret_hex: totpSeed, algorithm: 'totp', suite: 'SHA256', digits: 8, time_interval: 30 },
        ];
        const res = await upload(as.root as Session, writePskc({ ...enc, tokens }), headers, `?file_name=${tag}.pskc`);
        assert.equal(res.status, 201, JSON.stringify(res.body));
        assert.equal(res.body.import.status, 'completed');
        assert.equal(res.body.import.token_count, 2);
        assert.equal(res.body.import.encryption, 'encryption' in enc ? enc.encryption : 'none');
        const list = await (as.desk as Session).agent.get(`/v1/admin/hardware-tokens?import_id=${res.body.import.id}`).expect(200);
        assert.deepEqual(list.body.tokens.map((x: { serial: string; state: string }) => [x.serial, x.state]), [[`${tag}-H`, 'unassigned'], [`${tag}-T`, 'unassigned']]);
        // The imported seeds, counters and parameters work: the helpdesk assigns with the codes the tokens show.
        const desk = as.desk as Session;
        const h = await desk.agent.post(`/v1/admin/hardware-tokens/${tag}-H/assign`).set('X-CSRF-Token', desk.csrf).send({ user_id: aliceId, code: oathHotp(hotpSeed, 43), reason: 'handed out at the branch' });
        assert.equal(h.status, 200, JSON.stringify(h.body));
        assert.equal(h.body.token.state, 'assigned');
        const unix = Math.floor(t.clock.now().getTime() / 1000);
        const tt = await desk.agent.post(`/v1/admin/hardware-tokens/${tag}-T/assign`).set('X-CSRF-Token', desk.csrf).send({ user_id: aliceId, code: oathTotp(totpSeed, unix, { algorithm: 'SHA256', digits: 8 }), reason: 'handed out at the branch' });
        assert.equal(tt.status, 200, JSON.stringify(tt.body));
        // Seeds are sealed at rest and never in the logs or the audit log.
        const stored = await t.gw.store.db.selectFrom('hardware_tokens').select('seed_sealed').where('import_id', '=', res.body.import.id).execute();
        for (const s of stored) assert.match(s.seed_sealed ?? '', /^v1\./);
        const audit = await t.gw.store.db.selectFrom('audit_log').select('data').execute();
        for (const seed of [hotpSeed, totpSeed]) {
          const b64 = Buffer.from(seed, 'hex').toString('base64');
          assert.ok(!t.logs.text.includes(seed) && !t.logs.text.includes(b64));
          assert.ok(audit.every((a) => !a.data.includes(seed) && !a.data.includes(b64)));
        }
        if ('key_hex' in enc) assert.ok(!t.logs.text.includes(enc.key_hex));
        assert.ok(!t.logs.text.includes(FILE_PASSWORD));
      });
    }

    it('a wrong key, a wrong password and a tampered MAC: the same error, nothing imported, the failure recorded', async (tc) => {
      if (needPskc(tc)) return;
      const tokens = [{ serial: 'BAD-KEY-1', secret_hex: randomSeedHex() }];
      const pskFile = writePskc({ encryption: 'psk', key_hex: PSK, tokens });
      const pwFile = writePskc({ encryption: 'pbkdf2', password: FILE_PASSWORD, iterations: 1000, tokens });
      const tampered = pskFile.toString('utf8').replace(/(<pskc:ValueMAC>)(.)/, (_m, open: string, c: string) => `${open}${c === 'A' ? 'B' : 'A'}`);
      const before = await tokenCount();
      const results = [];
      for (const [file, headers] of [
        [pskFile, { 'X-Token-File-Key': PSK.replace(/^0/, '1') }],
        [pwFile, { 'X-Token-File-Password': 'not the password' }],
        [tampered, { 'X-Token-File-Key': PSK }],
      ] as const) {
        t.clock.advance(1); // the history is ordered by time
        results.push(await upload(as.root as Session, file, headers));
      }
      for (const r of results) {
        assert.equal(r.status, 400);
        assert.equal(r.body.code, 'token_file_decryption_failed');
        assert.equal(r.headers['content-type'], 'application/problem+json; charset=utf-8');
      }
      // Same title and detail, byte for byte: nothing tells the cases apart.
      assert.equal(new Set(results.map((r) => JSON.stringify({ ...r.body, request_id: undefined }))).size, 1);
      assert.equal(await tokenCount(), before);
      const history = await (as.audit as Session).agent.get('/v1/admin/hardware-tokens/imports?limit=3').expect(200);
      assert.deepEqual(history.body.imports.map((i: { status: string; error_code: string }) => [i.status, i.error_code]), Array(3).fill(['failed', 'token_file_decryption_failed']));
      const missing = await upload(as.root as Session, pskFile);
      assert.equal(missing.body.code, 'token_file_key_required');
    });

    it('a file with one bad token imports nothing and names the serial', async (tc) => {
      if (needPskc(tc)) return;
      const tokens = [
        { serial: 'ALL-1', secret_hex: randomSeedHex() },
        { serial: 'ALL-2', secret_hex: randomSeedHex(8) },
        { serial: 'ALL-3', secret_hex: randomSeedHex() },
      ];
      const before = await tokenCount();
      const r = await upload(as.root as Session, writePskc({ encryption: 'psk', key_hex: PSK, tokens }), { 'X-Token-File-Key': PSK });
      assert.equal(r.status, 400);
      assert.equal(r.body.code, 'token_import_rejected');
      assert.deepEqual(r.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/tokens/1']);
      assert.match(r.body.invalid_params[0].reason, /^serial ALL-2: weak_secret: /);
      assert.equal(await tokenCount(), before);
      const none = await (as.root as Session).agent.get('/v1/admin/hardware-tokens?serial=ALL-').expect(200);
      assert.equal(none.body.tokens.length, 0);
    });

    it('serials already in the inventory are refused (the whole file), duplicates within the file too', async (tc) => {
      if (needPskc(tc)) return;
      const first = await upload(as.root as Session, writePskc({ tokens: [{ serial: 'DUP-1', secret_hex: randomSeedHex() }] }));
      assert.equal(first.status, 201);
      const again = await upload(as.root as Session, writePskc({ tokens: [{ serial: 'DUP-0', secret_hex: randomSeedHex() }, { serial: 'dup-1', secret_hex: randomSeedHex() }] }));
      assert.equal(again.status, 400);
      assert.equal(again.body.code, 'token_import_rejected');
      assert.match(again.body.invalid_params[0].reason, /^serial DUP-1: duplicate_serial: /);
      assert.equal((await (as.root as Session).agent.get('/v1/admin/hardware-tokens/DUP-0')).status, 404);
      const within = await upload(as.root as Session, writePskc({ tokens: [{ serial: 'DUP-5', secret_hex: randomSeedHex() }, { serial: 'DUP-5', secret_hex: randomSeedHex() }] }));
      assert.equal(within.body.code, 'token_import_rejected');
      assert.equal(within.body.invalid_params[0].pointer, '/tokens/1');
    });

    it('two concurrent imports of the same serials: exactly one succeeds', async (tc) => {
      if (needPskc(tc)) return;
      const file = writePskc({ tokens: Array.from({ length: 50 }, (_, i) => ({ serial: `RACE-${i}`, secret_hex: randomSeedHex() })) });
      const results = await Promise.all([upload(as.root as Session, file), upload(as.root as Session, file), upload(as.root as Session, file)]);
      assert.equal(results.filter((r) => r.status === 201).length, 1, results.map((r) => r.status).join());
      for (const r of results.filter((x) => x.status !== 201)) assert.equal(r.body.code, 'token_import_rejected');
      const list = await (as.root as Session).agent.get('/v1/admin/hardware-tokens?serial=RACE-&limit=500').expect(200);
      assert.equal(list.body.tokens.length, 50);
    });

    it('CSV upload; DTDs and oversized uploads refused; only admins import', async (tc) => {
      if (needOathtool(tc)) return;
      const seed = randomSeedHex();
      const csv = `serial,seed,type,digits,counter|period,algorithm\nCSV-77,${seed},hotp,6,0,SHA1\n`;
      const ok = await (as.root as Session).agent.post('/v1/admin/hardware-tokens/imports?file_name=batch.csv').set('X-CSRF-Token', (as.root as Session).csrf).set('Content-Type', 'text/csv').send(csv);
      assert.equal(ok.status, 201, JSON.stringify(ok.body));
      assert.equal(ok.body.import.format, 'csv');
      assert.equal(ok.body.import.file_name, 'batch.csv');
      const dtd = await upload(as.root as Session, '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><KeyContainer/>');
      assert.equal(dtd.status, 400);
      assert.equal(dtd.body.code, 'token_file_invalid');
      for (const who of ['desk', 'audit', 'alice']) {
        const r = await upload(as[who] as Session, csv);
        assert.equal(r.status, 403, who);
      }
      const anonymous = await t.http().post('/v1/admin/hardware-tokens/imports').set('Content-Type', 'text/csv').send(csv);
      assert.equal(anonymous.status, 401);
      const noCsrf = await (as.root as Session).agent.post('/v1/admin/hardware-tokens/imports').set('Content-Type', 'text/csv').send(csv);
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.code, 'csrf_failed');
      const json = await (as.root as Session).agent.post('/v1/admin/hardware-tokens/imports').set('X-CSRF-Token', (as.root as Session).csrf).send({ file: csv });
      assert.equal(json.status, 415);
      const badKey = await upload(as.root as Session, csv, { 'X-Token-File-Key': 'xyz' });
      assert.equal(badKey.status, 400);
      assert.deepEqual(badKey.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/headers/x-token-file-key']);
    });

    it('search by serial prefix, state and user; import history with counts; OpenAPI lists the routes', async () => {
      const page = await (as.audit as Session).agent.get('/v1/admin/hardware-tokens?state=assigned').expect(200);
      assert.ok(page.body.tokens.length >= 2);
      for (const x of page.body.tokens) assert.equal(x.state, 'assigned');
      const byUser = await (as.audit as Session).agent.get('/v1/admin/hardware-tokens?username=ALICE').expect(200);
      assert.ok(byUser.body.tokens.every((x: { user_id: string }) => x.user_id === aliceId));
      assert.equal(byUser.body.tokens.length, page.body.tokens.length);
      const bad = await (as.audit as Session).agent.get('/v1/admin/hardware-tokens?state=misplaced');
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/state']);
      const history = await (as.audit as Session).agent.get('/v1/admin/hardware-tokens/imports?limit=200').expect(200);
      const completed = history.body.imports.filter((i: { status: string }) => i.status === 'completed');
      assert.ok(completed.length >= 5);
      const one = await (as.audit as Session).agent.get(`/v1/admin/hardware-tokens/imports/${completed[0].id}`).expect(200);
      assert.equal(one.body.import.id, completed[0].id);
      const openapi = await t.http().get('/openapi.json').expect(200);
      for (const p of ['/v1/admin/hardware-tokens', '/v1/admin/hardware-tokens/imports', '/v1/admin/hardware-tokens/{serial}/assign', '/v1/admin/hardware-tokens/{serial}/resync']) assert.ok(openapi.body.paths[p], p);
      assert.ok(openapi.body.paths['/v1/admin/hardware-tokens/imports'].post.requestBody.content['application/pskc+xml']);
    });
  });
}

describe('hardware-token import size limit', () => {
  it('an upload over hardwareTokens.import.maxBytes is refused with 413 and imports nothing', async () => {
    const t = await createTestGateway({ config: { hardwareTokens: { import: { maxBytes: 2048 } } } });
    try {
      await createUser(t.gw, { username: 'root', password: PASSWORD, roles: ['admin'] }, { actor: 'test' });
      const agent = t.agent();
      const login = await agent.post('/v1/login').send({ username: 'root', password: PASSWORD }).expect(200);
      const r = await agent.post('/v1/admin/hardware-tokens/imports').set('X-CSRF-Token', login.body.csrf_token).set('Content-Type', 'text/csv').send(`${'#'.repeat(3000)}\n`);
      assert.equal(r.status, 413);
      assert.equal((await t.gw.store.db.selectFrom('hardware_tokens').selectAll().execute()).length, 0);
    } finally {
      await t.close();
    }
  });
});

describe('hardware-token upload byte limit (hardwareTokens.import.maxUploadBytes)', () => {
  it('an upload over maxUploadBytes (under maxBytes) is refused unread with 413 naming `stepgate tokens import`; without a declared length the body parser cuts it; under the limit it imports', async () => {
    const t = await createTestGateway({ config: { hardwareTokens: { import: { maxUploadBytes: 4096 } } } });
    const server = t.app.listen(0, '127.0.0.1');
    try {
      await createUser(t.gw, { username: 'root', password: PASSWORD, roles: ['admin'] }, { actor: 'test' });
      const agent = t.agent();
      const login = await agent.post('/v1/login').send({ username: 'root', password: PASSWORD }).expect(200);
      const rows = (n: number) => ['serial,seed,type,digits,counter|period,algorithm', ...Array.from({ length: n }, (_, i) => `BYT-${i},${randomSeedHex(20)},hotp,6,0,SHA1`), ''].join('\n');
      const big = rows(80);
      assert.ok(big.length > 4096, 'the file is over the upload limit');
      const r = await agent.post('/v1/admin/hardware-tokens/imports?file_name=big.csv').set('X-CSRF-Token', login.body.csrf_token).set('Content-Type', 'text/csv').send(big);
      assert.equal(r.status, 413, JSON.stringify(r.body));
      assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
      assert.equal(r.body.code, 'token_file_too_large');
      assert.match(r.body.detail, /maxUploadBytes/);
      assert.match(r.body.detail, /stepgate tokens import/);
      // The same body sent chunked (no Content-Length): cut at the limit while it is read.
      const cookie = (await agent.get('/v1/me')).request.cookies;
      const { port } = server.address() as { port: number };
      const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/admin/hardware-tokens/imports?file_name=chunked.csv', headers: { 'content-type': 'text/csv', 'x-csrf-token': login.body.csrf_token, cookie, 'transfer-encoding': 'chunked' } }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        for (let i = 0; i < big.length; i += 512) req.write(big.slice(i, i + 512));
        req.end();
      });
      assert.equal(chunked.status, 413, chunked.body);
      assert.equal(JSON.parse(chunked.body).code, 'payload_too_large');
      assert.equal((await t.gw.store.db.selectFrom('hardware_tokens').selectAll().execute()).length, 0, 'nothing imported');
      const small = rows(10);
      const ok = await agent.post('/v1/admin/hardware-tokens/imports?file_name=small.csv').set('X-CSRF-Token', login.body.csrf_token).set('Content-Type', 'text/csv').send(small);
      assert.equal(ok.status, 201, JSON.stringify(ok.body));
      assert.equal(ok.body.import.token_count, 10);
    } finally {
      server.close();
      await t.close();
    }
  });
});

describe('hardware-token upload token limit (hardwareTokens.import.maxUploadTokens)', () => {
  it('an upload with more tokens is refused with 413 naming `stepgate tokens import`, recorded, nothing imported; the CLI path imports the same file', async () => {
    const t = await createTestGateway({ config: { hardwareTokens: { import: { maxUploadTokens: 2 } } } });
    try {
      await createUser(t.gw, { username: 'root', password: PASSWORD, roles: ['admin'] }, { actor: 'test' });
      const agent = t.agent();
      const login = await agent.post('/v1/login').send({ username: 'root', password: PASSWORD }).expect(200);
      const csv = ['serial,seed,type,digits,counter|period,algorithm', ...[1, 2, 3].map((i) => `UPL-${i},${randomSeedHex(20)},hotp,6,0,SHA1`), ''].join('\n');
      const two = csv.split('\n').slice(0, 3).join('\n');
      const r = await agent.post('/v1/admin/hardware-tokens/imports?file_name=three.csv').set('X-CSRF-Token', login.body.csrf_token).set('Content-Type', 'text/csv').send(csv);
      assert.equal(r.status, 413, JSON.stringify(r.body));
      assert.equal(r.body.code, 'token_file_too_large');
      assert.match(r.body.detail, /stepgate tokens import/);
      assert.match(r.body.detail, /maxUploadTokens/);
      assert.equal((await t.gw.store.db.selectFrom('hardware_tokens').selectAll().execute()).length, 0);
      const history = await agent.get('/v1/admin/hardware-tokens/imports').expect(200);
      assert.deepEqual(history.body.imports.map((i: { status: string; error_code: string | null }) => [i.status, i.error_code]), [['failed', 'token_file_too_large']]);
      // At the limit an upload is fine.
      const ok = await agent.post('/v1/admin/hardware-tokens/imports?file_name=two.csv').set('X-CSRF-Token', login.body.csrf_token).set('Content-Type', 'text/csv').send(`${two}\n`);
      assert.equal(ok.status, 201, JSON.stringify(ok.body));
      assert.equal(ok.body.import.token_count, 2);
      // `stepgate tokens import` (source cli) is held to hardwareTokens.import.maxTokens only.
      const more = csv.replaceAll('UPL-', 'CLI-');
      const viaCli = await importTokenFile(t.gw, { data: Buffer.from(more, 'utf8'), fileName: 'three.csv', source: 'cli' }, { actor: 'cli:test' });
      assert.equal(viaCli.tokenCount, 3);
      assert.equal((await t.gw.store.db.selectFrom('hardware_tokens').selectAll().execute()).length, 5);
    } finally {
      await t.close();
    }
  });
});

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { sql } from 'kysely';
import { AuditLog, GENESIS_HASH, rowHash, verifyAuditChain } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import type { Store } from '../../src/store/database.ts';
import { createTestDatabase, testDialects, type TestDatabase } from '../helpers/stores.ts';

const AUDIT_LOG_MODULE = new URL('../../src/audit/audit-log.ts', import.meta.url).href;
const DATABASE_MODULE = new URL('../../src/store/database.ts', import.meta.url).href;

/** Another process appending `count` events to the same database, one after the other. */
function spawnAppender(database: TestDatabase, count: number) {
  const script = `
    const { AuditLog } = await import(${JSON.stringify(AUDIT_LOG_MODULE)});
    const { openStore } = await import(${JSON.stringify(DATABASE_MODULE)});
    const store = await openStore(${JSON.stringify({ url: database.url, sqliteFile: database.sqliteFile, schema: database.schema })});
    const audit = new AuditLog(store.dialect, { now: () => new Date() });
    process.stdout.write('ready\\n');
    for (let i = 0; i < ${count}; i += 1) await audit.append(store.db, { type: 'test.appended', actor: 'child_' + i });
    await store.close();
  `;
  const proc = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout.once('data', () => resolve());
    proc.once('exit', () => reject(new Error(`appender exited early: ${stderr}`)));
  });
  const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { ready, exit, stderr: () => stderr };
}

for (const dialect of testDialects()) {
  describe(`audit chain (${dialect})`, () => {
    let database: TestDatabase;
    let store: Store;
    let audit: AuditLog;
    const clock = new FixedClock(Date.UTC(2026, 2, 1));

    before(async () => {
      database = await createTestDatabase(dialect);
      store = await database.open();
      await store.migrate();
      audit = new AuditLog(store.dialect, clock);
    });
    after(async () => {
      await store.close();
      await database.drop();
    });
    beforeEach(async () => {
      await store.db.deleteFrom('audit_log').execute();
      await store.db.updateTable('meta').set({ value: '0' }).where('key', '=', 'audit_head').execute();
    });

    async function appendMany(n: number, log = audit): Promise<void> {
      await Promise.all(
        Array.from({ length: n }, (_, i) => log.append(store.db, { type: 'test.appended', actor: `caller_${i}`, subject: `s_${i % 3}`, data: { i } })),
      );
    }

    async function seqs(): Promise<number[]> {
      const rows = await store.db.selectFrom('audit_log').select('seq').orderBy('seq').execute();
      return rows.map((r) => Number(r.seq));
    }

    it('verifies an empty log', async () => {
      const result = await verifyAuditChain(store.db);
      assert.deepEqual(result, { ok: true, rows: 0, headHash: GENESIS_HASH });
    });

    it('serialises 20 concurrent appends into an unbroken chain 1..20', async () => {
      await appendMany(20);
      assert.deepEqual(await seqs(), Array.from({ length: 20 }, (_, i) => i + 1));
      const result = await verifyAuditChain(store.db);
      assert.equal(result.ok, true);
      assert.equal(result.rows, 20);
      // Every caller's event is there exactly once.
      const actors = (await store.db.selectFrom('audit_log').select('actor').execute()).map((r) => r.actor).sort();
      assert.deepEqual(actors, Array.from({ length: 20 }, (_, i) => `caller_${i}`).sort());
    });

    it('serialises appends from two gateway processes on one database', async () => {
      // A real second process: two SQLite connections inside one process would block each
      // other's event loop on the busy timeout, which is not what production does.
      const child = spawnAppender(database, 30);
      await child.ready;
      for (let i = 0; i < 30; i += 1) await audit.append(store.db, { type: 'test.appended', actor: `parent_${i}` });
      assert.equal(await child.exit, 0, child.stderr());
      assert.deepEqual(await seqs(), Array.from({ length: 60 }, (_, i) => i + 1));
      const result = await verifyAuditChain(store.db, 7);
      assert.ok(result.ok && result.rows === 60, JSON.stringify(result));
      const actors = await store.db.selectFrom('audit_log').select('actor').execute();
      assert.equal(actors.filter((r) => r.actor?.startsWith('child_')).length, 30);
    });

    it('commits an event with the transaction it belongs to, and drops it on rollback', async () => {
      await audit.append(store.db, { type: 'test.kept' });
      await assert.rejects(
        store.db.transaction().execute(async (tx) => {
          await audit.append(tx, { type: 'test.rolled_back' });
          throw new Error('abort');
        }),
        /abort/,
      );
      await audit.append(store.db, { type: 'test.kept' });
      const types = (await store.db.selectFrom('audit_log').select('type').orderBy('seq').execute()).map((r) => r.type);
      assert.deepEqual(types, ['test.kept', 'test.kept']);
      assert.equal((await verifyAuditChain(store.db)).ok, true);
    });

    it('stores canonical JSON and the hash of each row', async () => {
      const row = await audit.append(store.db, { type: 'user.created', actor: 'usr_a', subject: 'usr_b', ip: '10.0.0.1', requestId: 'req-12345678', data: { z: 1, a: [2, { y: true, b: null }] } });
      assert.equal(row.data, '{"a":[2,{"b":null,"y":true}],"z":1}');
      assert.equal(row.seq, 1);
      assert.equal(row.prev_hash, GENESIS_HASH);
      const { hash, ...rest } = row;
      assert.equal(rowHash(rest), hash);
      const stored = await store.db.selectFrom('audit_log').selectAll().where('seq', '=', 1).executeTakeFirstOrThrow();
      assert.deepEqual({ ...stored, seq: Number(stored.seq), at: Number(stored.at) }, row);
    });

    it('a lone surrogate in a text column (stored as U+FFFD) does not break the chain', async () => {
      const row = await audit.append(store.db, { type: 'test.appended', actor: 'a\ud800', subject: '\udfffb', data: { note: 'c\ud83d' } });
      assert.equal(row.actor, 'a\ufffd');
      assert.equal(row.subject, '\ufffdb');
      const stored = await store.db.selectFrom('audit_log').select(['actor', 'subject', 'data']).where('seq', '=', row.seq).executeTakeFirstOrThrow();
      assert.deepEqual({ actor: stored.actor, subject: stored.subject }, { actor: 'a\ufffd', subject: '\ufffdb' });
      assert.equal((JSON.parse(stored.data) as { note: string }).note, 'c\ud83d', 'data keeps the escape');
      assert.deepEqual(await verifyAuditChain(store.db), { ok: true, rows: 1, headHash: row.hash });
    });

    it('names the edited row when one row\'s data is changed', async () => {
      await appendMany(8);
      await store.db.updateTable('audit_log').set({ data: '{"i":999}' }).where('seq', '=', 5).execute();
      const result = await verifyAuditChain(store.db);
      assert.equal(result.ok, false);
      assert.ok(!result.ok && result.brokenSeq === 5 && result.reason === 'hash_mismatch', JSON.stringify(result));
      assert.equal(result.rows, 4);
    });

    it('names the edited row when any hashed column is changed', async () => {
      for (const [column, value] of [['actor', 'usr_evil'], ['at', 1], ['type', 'test.other'], ['subject', null], ['ip', '1.2.3.4']] as const) {
        await store.db.deleteFrom('audit_log').execute();
        await store.db.updateTable('meta').set({ value: '0' }).where('key', '=', 'audit_head').execute();
        await appendMany(4);
        await sql`update audit_log set ${sql.ref(column)} = ${value} where seq = 3`.execute(store.db);
        const result = await verifyAuditChain(store.db);
        assert.ok(!result.ok && result.brokenSeq === 3, `${column}: ${JSON.stringify(result)}`);
      }
    });

    it('detects an edit whose own hash was recomputed at the next row', async () => {
      await appendMany(6);
      const row = await store.db.selectFrom('audit_log').selectAll().where('seq', '=', 2).executeTakeFirstOrThrow();
      const forged = { ...row, seq: Number(row.seq), at: Number(row.at), data: '{"i":-1}' };
      const { hash: _old, ...rest } = forged;
      await store.db.updateTable('audit_log').set({ data: forged.data, hash: rowHash(rest) }).where('seq', '=', 2).execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 3 && result.reason === 'prev_hash_mismatch', JSON.stringify(result));
    });

    it('names a deleted middle row', async () => {
      await appendMany(8);
      await store.db.deleteFrom('audit_log').where('seq', '=', 4).execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 4 && result.reason === 'sequence_gap', JSON.stringify(result));
    });

    it('names a deleted first row', async () => {
      await appendMany(3);
      await store.db.deleteFrom('audit_log').where('seq', '=', 1).execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 1, JSON.stringify(result));
    });

    it('names a deleted last row (the chain head remembers it)', async () => {
      await appendMany(8);
      await store.db.deleteFrom('audit_log').where('seq', '=', 8).execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 8 && result.reason === 'head_mismatch', JSON.stringify(result));
      assert.equal(result.rows, 7);
    });

    it('detects a wiped log', async () => {
      await appendMany(3);
      await store.db.deleteFrom('audit_log').execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 1 && result.reason === 'head_mismatch', JSON.stringify(result));
    });

    it('detects swapped rows', async () => {
      await appendMany(5);
      const two = await store.db.selectFrom('audit_log').selectAll().where('seq', '=', 2).executeTakeFirstOrThrow();
      const three = await store.db.selectFrom('audit_log').selectAll().where('seq', '=', 3).executeTakeFirstOrThrow();
      const { seq: _2, ...twoRest } = two;
      const { seq: _3, ...threeRest } = three;
      await store.db.updateTable('audit_log').set(threeRest).where('seq', '=', 2).execute();
      await store.db.updateTable('audit_log').set(twoRest).where('seq', '=', 3).execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 2, JSON.stringify(result));
    });

    it('does not mistake events appended during the walk for tampering', async () => {
      await appendMany(10);
      const writers = appendMany(40);
      const results = await Promise.all(Array.from({ length: 8 }, () => verifyAuditChain(store.db, 3)));
      await writers;
      for (const r of results) assert.equal(r.ok, true, JSON.stringify(r));
      const final = await verifyAuditChain(store.db, 3);
      assert.ok(final.ok && final.rows === 50, JSON.stringify(final));
    });

    it('detects rows written around the chain head, or a head that was reset', async () => {
      await appendMany(5);
      const afterFour = await store.db.selectFrom('audit_log').select(['seq', 'hash']).where('seq', '=', 4).executeTakeFirstOrThrow();
      // The head rolled back by one: row 5 exists but the head never recorded it.
      await store.db.updateTable('meta').set({ value: JSON.stringify({ seq: 4, hash: afterFour.hash }) }).where('key', '=', 'audit_head').execute();
      let result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 5 && result.reason === 'head_mismatch', JSON.stringify(result));
      // The head reset to "empty": every row is unaccounted for.
      await store.db.updateTable('meta').set({ value: '0' }).where('key', '=', 'audit_head').execute();
      result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 1, JSON.stringify(result));
      // The head row deleted altogether.
      await store.db.deleteFrom('meta').where('key', '=', 'audit_head').execute();
      result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 1, JSON.stringify(result));
      await store.db.insertInto('meta').values({ key: 'audit_head', value: '0' }).execute();
    });

    it('detects a last row edited with its hash recomputed (the head keeps the old hash)', async () => {
      await appendMany(4);
      const row = await store.db.selectFrom('audit_log').selectAll().where('seq', '=', 4).executeTakeFirstOrThrow();
      const forged = { ...row, seq: Number(row.seq), at: Number(row.at), data: '{"i":-4}' };
      const { hash: _old, ...rest } = forged;
      await store.db.updateTable('audit_log').set({ data: forged.data, hash: rowHash(rest) }).where('seq', '=', 4).execute();
      const result = await verifyAuditChain(store.db);
      assert.ok(!result.ok && result.brokenSeq === 4 && result.reason === 'head_mismatch', JSON.stringify(result));
    });

    it('keeps verifying across pages', async () => {
      await appendMany(12);
      assert.equal((await verifyAuditChain(store.db, 5)).ok, true);
      await store.db.updateTable('audit_log').set({ data: '{}' }).where('seq', '=', 11).execute();
      const result = await verifyAuditChain(store.db, 5);
      assert.ok(!result.ok && result.brokenSeq === 11, JSON.stringify(result));
    });
  });
}

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { loadConfig } from '../../src/config/load-config.ts';
import { openConfiguredStore } from '../../src/gateway.ts';
import { openStore, type Store } from '../../src/store/database.ts';

/**
 * The embedded SQLite store is opened the way DESIGN.md §3 and the issue require: WAL (readers
 * never block the writer, a crash loses nothing committed), a busy timeout (a second process
 * waits for the lock instead of failing), foreign keys enforced (SQLite leaves them off by
 * default, which would let a factor outlive its user).
 */
describe('SQLite store pragmas', () => {
  let dir: string;
  let store: Store;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'stepgate-sqlite-'));
    store = await openStore({ url: '', sqliteFile: join(dir, 'stepgate.sqlite'), sqliteBusyTimeoutMs: 4321 });
    await store.migrate();
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function pragma(name: string): Promise<unknown> {
    const { rows } = await sql<Record<string, unknown>>`${sql.raw(`pragma ${name}`)}`.execute(store.db);
    const row = rows[0] ?? {};
    return Object.values(row)[0];
  }

  it('journal_mode is WAL', async () => {
    assert.equal(await pragma('journal_mode'), 'wal');
  });

  it('busy_timeout is the configured database.sqliteBusyTimeoutMs', async () => {
    assert.equal(Number(await pragma('busy_timeout')), 4321);
  });

  it('the gateway opens its configured store the same way', async () => {
    const gwDir = mkdtempSync(join(tmpdir(), 'stepgate-sqlite-'));
    const configured = await openConfiguredStore(loadConfig({ env: {}, overrides: { dataDir: gwDir, database: { sqliteBusyTimeoutMs: 1234 } } }));
    try {
      const { rows } = await sql<Record<string, unknown>>`pragma busy_timeout`.execute(configured.db);
      assert.equal(Number(Object.values(rows[0] ?? {})[0]), 1234);
      const mode = await sql<Record<string, unknown>>`pragma journal_mode`.execute(configured.db);
      assert.equal(Object.values(mode.rows[0] ?? {})[0], 'wal');
    } finally {
      await configured.close();
      rmSync(gwDir, { recursive: true, force: true });
    }
  });

  it('synchronous is NORMAL: the driver fdatasyncs the WAL itself before answering (sqlite-group-commit.test.ts)', async () => {
    assert.equal(Number(await pragma('synchronous')), 1);
  });

  it('foreign keys are on and enforced', async () => {
    assert.equal(Number(await pragma('foreign_keys')), 1);
    const now = Date.now();
    await assert.rejects(
      store.db
        .insertInto('factors')
        .values({ id: 'fac_orphan', user_id: 'usr_missing', type: 'password', label: '', status: 'active', secret_hash: null, secret_sealed: null, params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null })
        .execute(),
      /FOREIGN KEY constraint failed/,
    );
    // And ON DELETE CASCADE works: a user's factors go with the user.
    await store.db.insertInto('users').values({ id: 'usr_a', username: 'a', display_name: 'a', roles: '[]', groups: '[]', status: 'active', created_at: now, updated_at: now }).execute();
    await store.db
      .insertInto('factors')
      .values({ id: 'fac_a', user_id: 'usr_a', type: 'password', label: '', status: 'active', secret_hash: null, secret_sealed: null, params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null })
      .execute();
    await store.db.deleteFrom('users').where('id', '=', 'usr_a').execute();
    assert.equal((await store.db.selectFrom('factors').select('id').where('id', '=', 'fac_a').execute()).length, 0);
  });
});

// Durable commits per factor verification: the gateway in this process on the bench's SQLite
// file, counted by its driver (each WAL fdatasync is one durable commit, see
// src/store/node-sqlite-dialect.ts); requests one at a time, so no fsync is shared between
// requests. Kysely's query log counts the statements: this Kysely instance is not attached to
// FixedSql's direct path (NodeSqliteDialect.attachDirectPath), so every statement goes through
// Kysely's executor and its log.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Kysely } from 'kysely';
import { createApp } from '../../src/app.ts';
import type { Config } from '../../src/config/schema.ts';
import { createGateway } from '../../src/gateway.ts';
import { sqliteFileFor, type Store } from '../../src/store/database.ts';
import { openNodeSqlite } from '../../src/store/node-sqlite-dialect.ts';
import type { Database } from '../../src/store/schema.ts';

export interface CommitCounts {
  /** Durable group commits (WAL fdatasyncs) made by the gateway's SQLite driver. */
  commits: number;
  /** Statements run (Kysely's query log). */
  statements: number;
}

export interface InProcessGateway {
  url: string;
  counts(): CommitCounts;
  close(): Promise<void>;
}

/** The gateway app on an instrumented store, listening on loopback in this process. */
export async function countingGateway(config: Config): Promise<InProcessGateway> {
  let statements = 0;
  const { dialect, stats } = openNodeSqlite({ file: sqliteFileFor(config.dataDir), busyTimeoutMs: config.database.sqliteBusyTimeoutMs });
  const db = new Kysely<Database>({ dialect, log: () => {
    statements += 1;
  } });
  const store: Store = { db, dialect: 'sqlite', location: 'bench', migrate: async () => [], ping: async () => {}, close: () => db.destroy() };
  const gw = await createGateway(config, { store, migrate: false });
  const { app } = createApp(gw);
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    // The driver's own count of durable group commits (each one WAL fdatasync): requests one
    // at a time, so nothing is shared between requests and this is the per-request figure.
    counts: () => ({ commits: stats.flushes, statements }),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await gw.close();
      await store.close();
    },
  };
}

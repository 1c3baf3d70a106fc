// Durable commits per factor verification: the gateway in this process on the bench's SQLite
// file, through a Kysely whose query log counts every commit that wrote something (an
// autocommitted INSERT/UPDATE/DELETE, or a BEGIN … COMMIT with at least one write). On
// PostgreSQL each of those is one WAL flush (fsync); on SQLite with synchronous = FULL one
// fsync; the transactions are the same on both dialects (one flow code path).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Kysely, type LogEvent } from 'kysely';
import { createApp } from '../../src/app.ts';
import type { Config } from '../../src/config/schema.ts';
import { createGateway } from '../../src/gateway.ts';
import { sqliteFileFor, type Store } from '../../src/store/database.ts';
import { openNodeSqlite } from '../../src/store/node-sqlite-dialect.ts';
import type { Database } from '../../src/store/schema.ts';

export interface CommitCounts {
  /** Durable group commits (WAL fdatasyncs) made by the gateway's SQLite driver. */
  commits: number;
  /** Of which only rate-limit counters (per request, not per factor). */
  rateLimitCommits: number;
  statements: number;
}

class Counter {
  counts: CommitCounts = { commits: 0, rateLimitCommits: 0, statements: 0 };
  #inTx = false;
  #txWrites: string[] = [];

  onQuery(event: LogEvent): void {
    const sql = event.query.sql.trim().toLowerCase();
    this.counts.statements += 1;
    if (sql.startsWith('begin')) {
      this.#inTx = true;
      this.#txWrites = [];
      return;
    }
    if (sql.startsWith('commit')) {
      if (this.#txWrites.length > 0) this.#commit(this.#txWrites);
      this.#inTx = false;
      return;
    }
    if (sql.startsWith('rollback')) {
      this.#inTx = false;
      return;
    }
    const write = /^(insert|update|delete|replace)\b/.test(sql);
    if (!write) return;
    if (this.#inTx) this.#txWrites.push(sql);
    else this.#commit([sql]);
  }

  #commit(writes: string[]): void {
    this.counts.commits += 1;
    if (writes.every((w) => w.includes('"rate_limits"'))) this.counts.rateLimitCommits += 1;
  }
}

export interface InProcessGateway {
  url: string;
  counts(): CommitCounts;
  close(): Promise<void>;
}

/** The gateway app on an instrumented store, listening on loopback in this process. */
export async function countingGateway(config: Config): Promise<InProcessGateway> {
  const counter = new Counter();
  const { dialect, stats } = openNodeSqlite({ file: sqliteFileFor(config.dataDir), busyTimeoutMs: config.database.sqliteBusyTimeoutMs });
  const db = new Kysely<Database>({ dialect, log: (e) => counter.onQuery(e) });
  const store: Store = { db, dialect: 'sqlite', location: 'bench', migrate: async () => [], ping: async () => {}, close: () => db.destroy() };
  const gw = await createGateway(config, { store, migrate: false });
  const { app } = createApp(gw);
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    // The driver's own count of durable group commits (each one WAL fdatasync): requests one
    // at a time, so nothing is shared between requests and this is the per-request figure.
    counts: () => ({ ...counter.counts, commits: stats.flushes, rateLimitCommits: 0 }),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await gw.close();
      await store.close();
    },
  };
}

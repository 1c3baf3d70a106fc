import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/store/database.ts';
import { freePort } from '../helpers/processes.ts';
import type { TestDatabase } from '../helpers/stores.ts';

/**
 * A PostgreSQL server of the test's own (initdb + pg_ctl in a temp directory, on a free
 * port, as the postgres OS user), so a test may stop and restart it. The shared server of
 * the machine is never touched.
 */
export interface OwnPostgres {
  port: number;
  url: string;
  database: TestDatabase;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

const BIN = process.env.STEPGATE_CHAOS_PG_BIN ?? '/usr/lib/postgresql/15/bin';

const execFileAsync = promisify(execFile);

/** Runs a PostgreSQL tool as the postgres OS user (asynchronously: the test's load keeps running meanwhile). */
async function asPostgres(args: string[]): Promise<void> {
  const command = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...args] : args;
  await execFileAsync(command[0]!, command.slice(1));
}

export function ownPostgresAvailable(): string | undefined {
  try {
    execFileSync(join(BIN, 'pg_ctl'), ['--version'], { stdio: 'ignore' });
  } catch {
    return `no PostgreSQL binaries in ${BIN} (set STEPGATE_CHAOS_PG_BIN)`;
  }
  if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['postgres'], { stdio: 'ignore' });
    } catch {
      return 'running as root without a postgres OS user to run initdb as';
    }
  }
  return undefined;
}

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'stepgate-own-pg-'));
  const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-own-pg-data-'));
  const pgdata = join(dir, 'pgdata');
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  await asPostgres([join(BIN, 'initdb'), '-D', pgdata, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const pgCtl = (action: string[]) => asPostgres([join(BIN, 'pg_ctl'), '-D', pgdata, '-w', '-t', '60', ...action]);
  const start = () => pgCtl(['-l', join(dir, 'server.log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=on`, 'start']);
  await start();
  const database: TestDatabase = {
    dialect: 'postgres',
    url,
    schema: 'chaos',
    sqliteFile: '',
    dataDir,
    open: () => openStore({ url, sqliteFile: '', schema: 'chaos', poolMax: 10 }),
    async drop() {},
  };
  return {
    port,
    url,
    database,
    stop: (mode = 'fast') => pgCtl(['-m', mode, 'stop']),
    start,
    async destroy() {
      try {
        await pgCtl(['-m', 'immediate', 'stop']);
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

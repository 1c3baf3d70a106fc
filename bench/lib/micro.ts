import { generateKeyPairSync, randomBytes, randomUUID, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { hash, verify } from '@node-rs/argon2';
import { jwtVerify, SignJWT } from 'jose';
import pg from 'pg';

/** A measured rate: operations per wall-clock second and per CPU-second of this process. */
export interface Rate {
  perSecond: number;
  perCpuSecond: number;
  ops: number;
}

async function measure(seconds: number, run: () => Promise<number>): Promise<Rate> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const ops = await run();
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  void seconds;
  return { perSecond: ops / wall, perCpuSecond: ops / Math.max(cpuSeconds, 1e-6), ops };
}

async function loopFor(seconds: number, op: () => Promise<unknown>, concurrency = 1): Promise<number> {
  const until = performance.now() + seconds * 1000;
  let ops = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        await op();
        ops += 1;
      }
    }),
  );
  return ops;
}

export async function joseSignRate(seconds: number): Promise<Rate> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return measure(seconds, () =>
    loopFor(seconds, () => new SignJWT({ jti: randomUUID(), acr: 'urn:stepgate:aal2' }).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'stepup+jwt' }).setIssuedAt().setExpirationTime('2m').sign(privateKey)),
  );
}

export async function joseVerifyRate(seconds: number): Promise<Rate> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const token = await new SignJWT({ acr: 'urn:stepgate:aal2' }).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'stepup+jwt' }).setIssuedAt().setExpirationTime('10m').sign(privateKey);
  return measure(seconds, () => loopFor(seconds, () => jwtVerify(token, publicKey, { algorithms: ['ES256'], typ: 'stepup+jwt' })));
}

/** argon2id verifications with as many in flight as cores (what the gateway allows). */
export async function argon2VerifyRate(seconds: number, params: { memoryKiB: number; iterations: number; parallelism: number }): Promise<Rate> {
  const phc = await hash('bench password 123', { algorithm: 2, memoryCost: params.memoryKiB, timeCost: params.iterations, parallelism: params.parallelism });
  return measure(seconds, () => loopFor(seconds, () => verify(phc, 'bench password 123'), availableParallelism()));
}

/** Autocommitted single-row inserts into a WAL SQLite file with the gateway's pragmas. */
export async function sqliteInsertRate(seconds: number, dir: string): Promise<Rate> {
  return sqliteInserts(seconds, join(dir, 'insert-baseline.sqlite'), 'NORMAL');
}

async function sqliteInserts(seconds: number, file: string, synchronous: 'NORMAL' | 'FULL'): Promise<Rate> {
  const db = new DatabaseSync(file);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec(`PRAGMA synchronous = ${synchronous}`);
  db.exec('CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER NOT NULL)');
  const stmt = db.prepare('INSERT INTO t (id, v) VALUES (?, ?)');
  try {
    return await measure(seconds, () => loopFor(seconds, async () => stmt.run(randomUUID(), 1)));
  } finally {
    db.close();
  }
}

/** Autocommitted single-row inserts on PostgreSQL from `connections` clients in parallel. */
export async function pgInsertRate(seconds: number, url: string, schema: string, connections = 8): Promise<Rate> {
  const pool = new pg.Pool({ connectionString: url, max: connections });
  try {
    await pool.query(`create schema if not exists ${schema}`);
    await pool.query(`create table ${schema}.insert_baseline (id text primary key, v integer not null)`);
    return await measure(seconds, () => loopFor(seconds, () => pool.query(`insert into ${schema}.insert_baseline (id, v) values ($1, 1)`, [randomUUID()]), connections));
  } finally {
    await pool.query(`drop schema if exists ${schema} cascade`).catch(() => undefined);
    await pool.end();
  }
}

/**
 * Durable single-row writes: autocommitted inserts into a WAL SQLite file with
 * synchronous = FULL, so every commit is fsynced (what "the store's durable write rate" means:
 * a one-time code must be burnt durably). The gateway's own file runs synchronous = NORMAL
 * (durable across process crashes, fsync at checkpoints), so its writes are cheaper than these.
 */
export async function sqliteDurableInsertRate(seconds: number, dir: string): Promise<Rate> {
  return sqliteInserts(seconds, join(dir, 'durable-insert-baseline.sqlite'), 'FULL');
}

/** node:crypto ES256 verifications (DER signatures, the WebAuthn encoding) with one cached public KeyObject. */
export async function es256VerifyRate(seconds: number): Promise<Rate> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const data = randomBytes(37 + 32);
  const signature = cryptoSign('sha256', data, privateKey);
  return measure(seconds, () => loopFor(seconds, async () => cryptoVerify('sha256', data, publicKey, signature)));
}

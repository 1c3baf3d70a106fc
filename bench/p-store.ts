/**
 * P's SQLite store alone, without HTTP or the gateway: the writes and reads P makes for one
 * full step-up flow (begin: step-up row + event; issue: token stored, jti consumed, code
 * written with its event), run by 32 concurrent "flows" for a few seconds. Prints flows per
 * wall second and per CPU-second of this process (libuv pool included), so two SQLite drivers
 * can be compared on a noisy machine without the rest of the flow's noise, and the latency of
 * one flow (a checkpoint inside a COMMIT on the event loop shows in its p99).
 *
 *   node bench/p-store.ts [--driver path/to/sqlite-dialect.ts] [--seconds 5] [--connections 32]
 *                         [--no-checkpoint-thread]
 *
 * `--driver` takes any module exporting `openNodeSqlite` (the current one takes an options
 * object; the group-commit driver it replaced took `(file, busyTimeoutMs)`), e.g. an old
 * version written out with `git show <rev>:src/payment-code/store/sqlite-dialect.ts`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Kysely, type SqliteDialect } from 'kysely';
import { Migrator } from 'kysely/migration';
import { EventLog } from '../src/payment-code/events.ts';
import { migrations } from '../src/payment-code/store/migrations/index.ts';
import { PcSqliteReplayStore } from '../src/payment-code/store/replay-store.ts';
import type { PaymentCodeDatabase } from '../src/payment-code/store/schema.ts';
import { systemClock } from '../src/verifier/index.ts';

const { values } = parseArgs({
  options: {
    driver: { type: 'string', default: 'src/payment-code/store/sqlite-dialect.ts' },
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    /** Checkpoints on the event loop (SQLite's automatic ones) instead of the driver's thread. */
    'no-checkpoint-thread': { type: 'boolean', default: false },
    /** Extra PRAGMAs to run after opening, e.g. --pragma wal_autocheckpoint=0 (experiments). */
    pragma: { type: 'string', multiple: true, default: [] },
  },
});
const driverPath = resolve(values.driver);
const seconds = Number(values.seconds);
const connections = Number(values.connections);

type Open = (...args: unknown[]) => { dialect: SqliteDialect; raw: import('node:sqlite').DatabaseSync; stats: Record<string, number> };
const mod = (await import(new URL(`file://${driverPath}`).href)) as { openNodeSqlite: Open };
const dir = mkdtempSync(join(tmpdir(), 'stepgate-p-store-'));
const file = join(dir, 'p.sqlite');
const opened = mod.openNodeSqlite.length >= 2 ? mod.openNodeSqlite(file, 5000) : mod.openNodeSqlite({ file, busyTimeoutMs: 5000, checkpointThread: !values['no-checkpoint-thread'] });
for (const pragma of values.pragma) opened.raw.exec(`PRAGMA ${pragma}`);
const db = new Kysely<PaymentCodeDatabase>({ dialect: opened.dialect });
const { error } = await new Migrator({ db, provider: { getMigrations: async () => migrations }, migrationTableName: 'pc_migrations', migrationLockTableName: 'pc_migrations_lock' }).migrateToLatest();
if (error !== undefined) throw error;
const replay = new PcSqliteReplayStore(db, opened.raw, 'pc_stepup_replay', systemClock);
const events = new EventLog('sqlite', systemClock);
const id = () => randomBytes(12).toString('base64url');

async function flow(): Promise<void> {
  const stepupId = `stp_${id()}`;
  const now = Date.now();
  // Begin: the step-up row and its event.
  await db.transaction().execute(async (tx) => {
    await tx.insertInto('pc_stepups').values({ id: stepupId, owner: 'key_wallet', action: 'payment_code.issue', subject: 'usr_x', context: '{"amount_limit":"50.00","currency":"EUR"}', status: 'pending', token_sealed: null, failure: null, created_at: now, expires_at: now + 600_000, finished_at: null }).execute();
    await events.append(tx, { type: 'stepup.requested', actor: 'key_wallet', subject: 'usr_x', data: { stepupId } });
  });
  // Issue: load, store the token, consume its jti, write the code.
  await db.selectFrom('pc_stepups').selectAll().where('id', '=', stepupId).executeTakeFirst();
  await db.updateTable('pc_stepups').set({ token_sealed: randomBytes(300).toString('base64url'), status: 'token_received' }).where('id', '=', stepupId).where('status', '=', 'pending').where('token_sealed', 'is', null).executeTakeFirst();
  if (!(await replay.consume(`jti_${id()}`, new Date(now + 300_000)))) throw new Error('jti consumed twice');
  await db.transaction().execute(async (tx) => {
    await tx.updateTable('pc_stepups').set({ status: 'used', token_sealed: null, finished_at: now }).where('id', '=', stepupId).where('status', '=', 'token_received').executeTakeFirst();
    const codeId = `pcd_${id()}`;
    const hmac = id();
    await tx.insertInto('pc_live_codes').values({ code_hmac: hmac, code_id: codeId, expires_at: now + 120_000 }).onConflict((oc) => oc.column('code_hmac').doNothing()).execute();
    await tx
      .insertInto('pc_codes')
      .values({ id: codeId, code_hmac: hmac, qr_nonce: id(), subject: 'usr_x', owner: 'key_wallet', amount_limit: '50.00', currency: 'EUR', device_id: 'dev_1', payee: null, stepup_id: stepupId, token_jti: id(), acr: 'urn:stepgate:aal2', status: 'issued', issued_at: now, expires_at: now + 120_000, redeemed_at: null, redemption_id: null })
      .execute();
    await events.append(tx, { type: 'code.issued', actor: 'key_wallet', subject: 'usr_x', data: { codeId } });
  });
}

// Warm up (statement cache, JIT), then measure.
for (let i = 0; i < 200; i += 1) await flow();
const stats0 = { ...opened.stats };
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const until = t0 + seconds * 1000;
let flows = 0;
const latencies: number[] = [];
await Promise.all(
  Array.from({ length: connections }, async () => {
    while (performance.now() < until) {
      const started = performance.now();
      await flow();
      latencies.push(performance.now() - started);
      flows += 1;
    }
  }),
);
latencies.sort((a, b) => a - b);
const percentile = (p: number) => Number((latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0).toFixed(2));
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
const delta = Object.fromEntries(Object.entries(opened.stats).map(([k, v]) => [k, ((v - (stats0[k] ?? 0)) / flows).toFixed(2)]));
await db.destroy();
rmSync(dir, { recursive: true, force: true });
console.log(
  JSON.stringify({
    driver: values.driver,
    flowsPerSecond: Math.round(flows / wall),
    flowsPerCpuSecond: Math.round(flows / cpuSeconds),
    cpuMsPerFlow: Number(((cpuSeconds * 1000) / flows).toFixed(3)),
    userMs: Number((cpu.user / 1000 / flows).toFixed(3)),
    sysMs: Number((cpu.system / 1000 / flows).toFixed(3)),
    flowMs: { p50: percentile(0.5), p99: percentile(0.99), max: percentile(1) },
    perFlow: delta,
  }),
);

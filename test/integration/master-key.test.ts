import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { RotationError, rotateMasterKey } from '../../src/crypto/rotate-master.ts';
import { type MasterKey, masterKeyFromBytes, SealError, Sealer } from '../../src/crypto/sealer.ts';
import type { Executor } from '../../src/store/database.ts';
import { SEALED_COLUMNS } from '../../src/store/sealed-columns.ts';
import { main } from '../../src/main.ts';
import { ConfigError } from '../../src/config/load-config.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { createTestDatabase, testDialects } from '../helpers/stores.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function keyFromBase64(b64: string): MasterKey {
  return masterKeyFromBytes(Buffer.from(b64, 'base64'));
}

interface SealedValue {
  table: string;
  column: string;
  id: string;
  sealed: string;
  aad: string;
}

/** Every sealed value in the database, over every registered sealed column. */
async function sealedValues(db: Executor): Promise<SealedValue[]> {
  const out: SealedValue[] = [];
  for (const c of SEALED_COLUMNS) {
    const { rows } = await sql<{ id: string; sealed: string }>`select ${sql.ref(c.idColumn)} as id, ${sql.ref(c.column)} as sealed
      from ${sql.table(c.table)} where ${sql.ref(c.column)} is not null order by ${sql.ref(c.idColumn)}`.execute(db);
    for (const r of rows) out.push({ table: c.table, column: c.column, id: r.id, sealed: r.sealed, aad: c.aad(r.id) });
  }
  return out;
}

/** A user with `secrets.length` factors (null = a factor without a sealed secret). */
async function seedFactors(t: TestGateway, prefix: string, secrets: (string | null)[]): Promise<Map<string, string>> {
  const now = t.clock.now().getTime();
  const userId = `usr_${prefix}`;
  await t.gw.store.db
    .insertInto('users')
    .values({ id: userId, username: `${prefix}-user`, display_name: prefix, roles: '[]', groups: '[]', status: 'active', created_at: now, updated_at: now })
    .execute();
  const plaintexts = new Map<string, string>();
  for (const [i, secret] of secrets.entries()) {
    const id = `fac_${prefix}_${i}`;
    if (secret !== null) plaintexts.set(id, secret);
    await t.gw.store.db
      .insertInto('factors')
      .values({
        id,
        user_id: userId,
        type: secret === null ? 'password' : 'totp',
        label: '',
        status: 'active',
        secret_hash: null,
        secret_sealed: secret === null ? null : t.gw.sealer.seal(secret, `factors.secret_sealed:${id}`),
        params: '{}',
        counter: 0,
        failures: 0,
        locked_until: null,
        created_at: now,
        updated_at: now,
        last_used_at: null,
      })
      .execute();
  }
  return plaintexts;
}

function runCli(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STEPGATE_'))) as Record<string, string>;
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['bin/stepgate.js', ...args], { cwd: ROOT, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    proc.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Runs `main` in this process with extra environment variables, capturing its output. */
async function mainWithEnv(argv: string[], env: Record<string, string>): Promise<{ status: number; stdout: string; stderr: string }> {
  const saved = { ...process.env };
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  for (const k of Object.keys(process.env)) if (k.startsWith('STEPGATE_')) delete process.env[k];
  Object.assign(process.env, env);
  try {
    return { status: await main(argv), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

function cliEnvOf(t: TestGateway): Record<string, string> {
  return {
    STEPGATE_DATA_DIR: t.database.dataDir,
    STEPGATE_DATABASE_URL: t.database.url,
    STEPGATE_DATABASE_SCHEMA: t.database.schema,
    STEPGATE_MASTER_KEY: t.config.secrets.masterKey,
    STEPGATE_LOG_LEVEL: 'warn',
  };
}

describe('stepgate keys rotate-master usage', () => {
  it('refuses bad usage with exit 2 before opening the database', async () => {
    const current = randomBytes(32).toString('base64');
    // An unreachable database: any attempt to open it would fail the test differently.
    const base = { STEPGATE_DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', STEPGATE_MASTER_KEY: current };
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['keys', 'rotate-master'], {}, /--new-key-env VAR is required/],
      [['keys', 'rotate-master', '--new-key-env', 'NEW_KEY'], { NEW_KEY: 'dG9vIHNob3J0' }, /32 bytes/],
      [['keys', 'rotate-master', '--new-key-env', 'UNSET_VARIABLE_X'], {}, /UNSET_VARIABLE_X/],
      [['keys', 'rotate-master', '--new-key-env', 'NEW_KEY'], { NEW_KEY: current }, /is the current master key/],
      [['keys', 'rotate-master', '--new-key', randomBytes(32).toString('base64')], {}, /Unknown option/],
    ];
    for (const [args, extra, message] of cases) {
      const run = await mainWithEnv(args, { ...base, ...extra });
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message, args.join(' '));
      assert.ok(!run.stderr.includes(current), 'the key is never printed');
    }
  });
});

for (const dialect of testDialects()) {
  describe(`master-key rotation (${dialect})`, () => {
    it('lists only sealed columns that exist', async () => {
      const t = await createTestGateway({ dialect });
      try {
        for (const c of SEALED_COLUMNS) {
          await sql`select ${sql.ref(c.idColumn)}, ${sql.ref(c.column)} from ${sql.table(c.table)} where 1 = 0`.execute(t.gw.store.db);
          assert.match(c.aad('x'), new RegExp(`^${c.table}\\.${c.column}:x$`));
        }
      } finally {
        await t.close();
      }
    });

    it('re-seals every value in one go; afterwards only the new key is needed', async () => {
      const t = await createTestGateway({ dialect });
      try {
        const plaintexts = await seedFactors(t, 'a', ['seed-one', null, 'seed-two', 'seed-three']);
        const before = await sealedValues(t.gw.store.db);
        assert.ok(before.length >= 3);
        const oldKey = keyFromBase64(t.config.secrets.masterKey);
        const newKey = masterKeyFromBytes(randomBytes(32));
        const originals = new Map(before.map((v) => [`${v.table}:${v.id}`, t.gw.sealer.unseal(v.sealed, v.aad)]));

        const result = await rotateMasterKey({ store: t.gw.store, audit: t.gw.audit, currentKey: oldKey, newKey, actor: 'test' });
        assert.equal(result.resealed, before.length);
        assert.equal(result.toKeyId, newKey.id);
        assert.equal(result.fromKeyId, oldKey.id);

        const onlyNew = new Sealer(newKey);
        const onlyOld = new Sealer(oldKey);
        const afterRotation = await sealedValues(t.gw.store.db);
        assert.equal(afterRotation.length, before.length);
        for (const v of afterRotation) {
          assert.equal(Sealer.keyIdOf(v.sealed), newKey.id);
          assert.deepEqual(onlyNew.unseal(v.sealed, v.aad), originals.get(`${v.table}:${v.id}`));
          assert.throws(() => onlyOld.unseal(v.sealed, v.aad), SealError);
        }
        for (const [id, secret] of plaintexts) {
          const v = afterRotation.find((x) => x.id === id);
          assert.equal(onlyNew.unseal(v?.sealed ?? '', `factors.secret_sealed:${id}`).toString('utf8'), secret);
        }
        // The rotation is in the audit log, without any secret.
        const event = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'master_key.rotated').executeTakeFirstOrThrow();
        assert.deepEqual(JSON.parse(event.data).resealed, before.length);
        for (const secret of plaintexts.values()) assert.ok(!event.data.includes(secret));
        assert.equal((await verifyAuditChain(t.gw.store.db)).ok, true);

        // Running it again (the operator has not switched keys yet) is harmless.
        const again = await rotateMasterKey({ store: t.gw.store, audit: t.gw.audit, currentKey: oldKey, newKey, actor: 'test' });
        assert.equal(again.resealed, before.length);
        for (const v of await sealedValues(t.gw.store.db)) assert.deepEqual(onlyNew.unseal(v.sealed, v.aad), originals.get(`${v.table}:${v.id}`));
      } finally {
        await t.close();
      }
    });

    it('changes nothing when one value does not unseal', async () => {
      for (const spoil of ['unknown-key', 'tampered', 'moved'] as const) {
        const t = await createTestGateway({ dialect });
        try {
          await seedFactors(t, 'b', ['s1', 's2', 's3']);
          let bad: string;
          if (spoil === 'unknown-key') bad = new Sealer(masterKeyFromBytes(randomBytes(32))).seal('x', 'factors.secret_sealed:fac_b_1');
          else if (spoil === 'moved') bad = t.gw.sealer.seal('x', 'factors.secret_sealed:fac_b_0');
          else {
            const parts = t.gw.sealer.seal('x', 'factors.secret_sealed:fac_b_1').split('.');
            parts[3] = Buffer.from('tampered!').toString('base64url');
            bad = parts.join('.');
          }
          await t.gw.store.db.updateTable('factors').set({ secret_sealed: bad }).where('id', '=', 'fac_b_1').execute();
          const before = await sealedValues(t.gw.store.db);
          const auditRows = (await t.gw.store.db.selectFrom('audit_log').select('seq').execute()).length;

          const oldKey = keyFromBase64(t.config.secrets.masterKey);
          await assert.rejects(
            rotateMasterKey({ store: t.gw.store, audit: t.gw.audit, currentKey: oldKey, newKey: masterKeyFromBytes(randomBytes(32)), actor: 'test' }),
            (err: unknown) => err instanceof RotationError && err.code === 'rotation_failed' && err.table === 'factors' && err.rowId === 'fac_b_1',
            spoil,
          );
          assert.deepEqual(await sealedValues(t.gw.store.db), before, spoil);
          assert.equal((await t.gw.store.db.selectFrom('audit_log').select('seq').execute()).length, auditRows);
        } finally {
          await t.close();
        }
      }
    });

    it('refuses to rotate to the current key', async () => {
      const t = await createTestGateway({ dialect });
      try {
        const key = keyFromBase64(t.config.secrets.masterKey);
        await assert.rejects(rotateMasterKey({ store: t.gw.store, audit: t.gw.audit, currentKey: key, newKey: key, actor: 'test' }), TypeError);
      } finally {
        await t.close();
      }
    });

    describe('stepgate keys rotate-master', () => {
      let t: TestGateway;
      before(async () => {
        t = await createTestGateway({ dialect });
        await seedFactors(t, 'c', ['cli-seed-1', 'cli-seed-2']);
      });
      after(async () => {
        await t.close();
      });

      function env(extra: Record<string, string> = {}): Record<string, string> {
        return {
          STEPGATE_DATA_DIR: t.database.dataDir,
          STEPGATE_DATABASE_URL: t.database.url,
          STEPGATE_DATABASE_SCHEMA: t.database.schema,
          STEPGATE_MASTER_KEY: t.config.secrets.masterKey,
          STEPGATE_LOG_LEVEL: 'warn',
          ...extra,
        };
      }

      it('re-seals under the key named by --new-key-env', async () => {
        const count = (await sealedValues(t.gw.store.db)).length;
        const newB64 = randomBytes(32).toString('base64');
        const run = await runCli(['keys', 'rotate-master', '--new-key-env', 'NEW_KEY'], env({ NEW_KEY: newB64 }));
        assert.equal(run.status, 0, run.stderr);
        assert.match(run.stdout, new RegExp(`re-sealed ${count} value`));
        assert.ok(!run.stdout.includes(newB64) && !run.stderr.includes(newB64), 'the key is never printed');
        const onlyNew = new Sealer(keyFromBase64(newB64));
        for (const v of await sealedValues(t.gw.store.db)) onlyNew.unseal(v.sealed, v.aad);

        // The old key no longer unseals: a run still configured with it fails, changing nothing.
        const before = await sealedValues(t.gw.store.db);
        const stale = await runCli(['keys', 'rotate-master', '--new-key-env', 'NEW_KEY'], env({ NEW_KEY: randomBytes(32).toString('base64') }));
        assert.equal(stale.status, 1);
        assert.match(stale.stderr, /nothing was changed/);
        assert.deepEqual(await sealedValues(t.gw.store.db), before);

        // Configured with the new key, rotating back works.
        const back = await runCli(['keys', 'rotate-master', '--new-key-env', 'NEW_KEY'], env({ STEPGATE_MASTER_KEY: newB64, NEW_KEY: t.config.secrets.masterKey }));
        assert.equal(back.status, 0, back.stderr);
        for (const v of await sealedValues(t.gw.store.db)) t.gw.sealer.unseal(v.sealed, v.aad);
      });
    });

    describe('a master key that does not open the database', () => {
      let t: TestGateway;
      let newB64: string;
      before(async () => {
        t = await createTestGateway({ dialect });
        await seedFactors(t, 'w', ['wrong-key-seed']);
        newB64 = randomBytes(32).toString('base64');
        const run = await runCli(['keys', 'rotate-master', '--new-key-env', 'NEW_KEY'], { ...cliEnvOf(t), NEW_KEY: newB64 });
        assert.equal(run.status, 0, run.stderr);
      });
      after(async () => {
        await t.close();
      });

      it('after rotate-master, the old key is refused at start with one line and exit 2 (serve, keys list)', async () => {
        const old = cliEnvOf(t);
        for (const command of [['serve'], ['keys', 'list'], ['users', 'create', '--username', 'x', '--password-env', 'PATH']]) {
          const run = await runCli(command, { ...old, STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1' });
          assert.equal(run.status, 2, `${command.join(' ')}: ${run.stderr}`);
          const lines = run.stderr.trim().split('\n');
          assert.equal(lines.length, 1, `${command.join(' ')}: one line: ${run.stderr}`);
          assert.match(lines[0] as string, /^config: secrets\.masterKey: does not open the secrets sealed in the database: .* is sealed under master key \S+, but the configured master key is \S+/);
          assert.doesNotMatch(run.stderr, /SealError|\bat /);
        }
        // With the new key everything works: the JWKS is served.
        const good = await runCli(['keys', 'list', '--json'], { ...old, STEPGATE_MASTER_KEY: newB64 });
        assert.equal(good.status, 0, good.stderr);
        assert.ok((JSON.parse(good.stdout) as unknown[]).length >= 1);
      });

      it('/readyz stops saying ready when the running key no longer opens the sealed secrets', async () => {
        // `t` still runs with the old key: the rotation above happened in another process.
        const res = await t.http().get('/readyz');
        assert.equal(res.status, 503);
        assert.equal(res.body.code, 'service_unavailable');
        assert.match(res.body.detail, /master key/);
        const fresh = await createTestGateway({ dialect, database: t.database, masterKey: newB64 });
        try {
          assert.equal((await fresh.http().get('/readyz')).status, 200);
          assert.equal((await fresh.http().get('/.well-known/jwks.json')).status, 200);
        } finally {
          await fresh.close();
        }
      });

      it('a database from before the check value existed: its sealed values decide, then it gets one', async () => {
        await t.gw.store.db.deleteFrom('master_key_check').execute();
        await assert.rejects(
          createTestGateway({ dialect, database: t.database }),
          (err: unknown) => err instanceof ConfigError && err.key === 'secrets.masterKey',
        );
        assert.equal((await t.gw.store.db.selectFrom('master_key_check').selectAll().execute()).length, 0, 'a wrong key plants no check value');
        const right = await createTestGateway({ dialect, database: t.database, masterKey: newB64 });
        await right.close();
        const rows = await t.gw.store.db.selectFrom('master_key_check').selectAll().execute();
        assert.equal(rows.length, 1);
        assert.equal(Sealer.keyIdOf(rows[0]?.sealed ?? ''), keyFromBase64(newB64).id);
      });
    });

    it('replaces a development key file atomically and keeps the previous one', async () => {
      // A gateway without STEPGATE_MASTER_KEY: development generates <dataDir>/master.key.
      const database = await createTestDatabase(dialect);
      const t = await createTestGateway({ dialect, database, masterKey: '' });
      try {
        const file = join(database.dataDir, 'master.key');
        const oldB64 = readFileSync(file, 'utf8').trim();
        await seedFactors(t, 'd', ['dev-seed']);
        const before = await sealedValues(t.gw.store.db);
        const devEnv = { STEPGATE_DATA_DIR: database.dataDir, STEPGATE_DATABASE_URL: database.url, STEPGATE_DATABASE_SCHEMA: database.schema, STEPGATE_LOG_LEVEL: 'warn' };

        // A value that does not unseal: exit 1, the key file and the values untouched.
        await t.gw.store.db.updateTable('factors').set({ secret_sealed: 'v1.AAAAAAAAAAAA.AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA' }).where('id', '=', 'fac_d_0').execute();
        const failed = await runCli(['keys', 'rotate-master'], devEnv);
        assert.equal(failed.status, 1, failed.stderr);
        assert.match(failed.stderr, /fac_d_0/);
        assert.equal(readFileSync(file, 'utf8').trim(), oldB64);
        assert.ok(!existsSync(`${file}.next`) && !existsSync(`${file}.previous`));
        const restored = before.find((v) => v.id === 'fac_d_0')?.sealed ?? null;
        await t.gw.store.db.updateTable('factors').set({ secret_sealed: restored }).where('id', '=', 'fac_d_0').execute();

        const run = await runCli(['keys', 'rotate-master'], devEnv);
        assert.equal(run.status, 0, run.stderr);
        assert.match(run.stdout, new RegExp(`re-sealed ${before.length} value`));
        const newB64 = readFileSync(file, 'utf8').trim();
        assert.notEqual(newB64, oldB64);
        assert.equal(readFileSync(`${file}.previous`, 'utf8').trim(), oldB64);
        assert.equal(statSync(file).mode & 0o777, 0o600);
        assert.equal(statSync(`${file}.previous`).mode & 0o777, 0o600);
        assert.ok(!existsSync(`${file}.next`));
        const onlyNew = new Sealer(keyFromBase64(newB64));
        for (const v of await sealedValues(t.gw.store.db)) onlyNew.unseal(v.sealed, v.aad);
        assert.equal(onlyNew.unseal((await sealedValues(t.gw.store.db)).find((v) => v.id === 'fac_d_0')?.sealed ?? '', 'factors.secret_sealed:fac_d_0').toString(), 'dev-seed');
      } finally {
        await t.close();
        await database.drop();
      }
    });

    it('finishes a rotation interrupted between the commit and the file swap', async () => {
      const database = await createTestDatabase(dialect);
      const t = await createTestGateway({ dialect, database, masterKey: '' });
      try {
        const file = join(database.dataDir, 'master.key');
        const oldKey = keyFromBase64(readFileSync(file, 'utf8').trim());
        await seedFactors(t, 'e', ['crash-seed']);
        // Simulate the crash: the database is already under the key in master.key.next.
        const nextB64 = randomBytes(32).toString('base64');
        writeFileSync(`${file}.next`, `${nextB64}\n`, { mode: 0o600 });
        await rotateMasterKey({ store: t.gw.store, audit: t.gw.audit, currentKey: oldKey, newKey: keyFromBase64(nextB64), actor: 'test' });

        const run = await runCli(['keys', 'rotate-master'], { STEPGATE_DATA_DIR: database.dataDir, STEPGATE_DATABASE_URL: database.url, STEPGATE_DATABASE_SCHEMA: database.schema, STEPGATE_LOG_LEVEL: 'warn' });
        assert.equal(run.status, 0, run.stderr);
        assert.match(run.stderr, /interrupted rotation/);
        assert.equal(readFileSync(file, 'utf8').trim(), nextB64);
        const onlyNew = new Sealer(keyFromBase64(nextB64));
        for (const v of await sealedValues(t.gw.store.db)) onlyNew.unseal(v.sealed, v.aad);
      } finally {
        await t.close();
        await database.drop();
      }
    });
  });
}

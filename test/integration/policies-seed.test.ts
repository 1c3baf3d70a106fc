import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FixedClock } from '../../src/clock.ts';
import { ConfigError } from '../../src/config/load-config.ts';
import { seedPolicySet } from '../../src/flows/policies.ts';
import { createGateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/logger.ts';
import { policySetAt } from '../../src/stepup/policy-store.ts';
import type { Store } from '../../src/store/database.ts';
import { TEST_MASTER_KEY, testConfig } from '../helpers/gateway.ts';
import { createTestDatabase, type TestDatabase, testDialects } from '../helpers/stores.ts';

const SEED = `# our own starting set
policies:
  - id: everything-password
    action: payment_code.issue
    priority: 10
    require: { anyOf: [[password, totp], [webauthn]] }
    acr: urn:stepgate:aal2
`;

const INVALID_SEED = `policies:
  - id: weak
    action: payment_code.issue
    priority: 10
    require: { anyOf: [[password]] }
    acr: urn:stepgate:aal2
  - id: weak
    action: payment_code.issue
    priority: 20
    require: { anyOf: [[fingerprint]] }
    acr: urn:stepgate:aal1
`;

async function withDatabase(dialect: 'sqlite' | 'postgres', body: (database: TestDatabase, stores: Store[]) => Promise<void>): Promise<void> {
  const database = await createTestDatabase(dialect);
  const stores: Store[] = [];
  try {
    await body(database, stores);
  } finally {
    for (const s of stores) await s.close();
    await database.drop();
  }
}

async function openStore(database: TestDatabase, stores: Store[]): Promise<Store> {
  const store = await database.open();
  stores.push(store);
  return store;
}

async function policyRows(store: Store) {
  const sets = await store.db.selectFrom('policy_sets').select('version').execute();
  const events = await store.db.selectFrom('audit_log').select('seq').where('type', '=', 'policy.changed').execute();
  return { sets: sets.length, events: events.length };
}

const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));

function stepgate(database: TestDatabase, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    STEPGATE_DATA_DIR: database.dataDir,
    STEPGATE_DATABASE_URL: database.url,
    STEPGATE_DATABASE_SCHEMA: database.schema,
    STEPGATE_MASTER_KEY: TEST_MASTER_KEY,
    STEPGATE_LOG_LEVEL: 'warn',
  };
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

const options = (store: Store) => ({ store, clock: new FixedClock(), logger: createLogger('silent') });

for (const dialect of testDialects()) {
  describe(`policy set seeding on first start (${dialect})`, () => {
    it('a configured seed file becomes version 1, created by config; a restart does not seed again', async () => {
      await withDatabase(dialect, async (database, stores) => {
        const file = join(database.dataDir, 'seed.yaml');
        writeFileSync(file, SEED);
        const config = testConfig(database, { policies: { seedFile: file } });
        const store = await openStore(database, stores);
        await createGateway(config, options(store));
        const v1 = await policySetAt(store.db, 1);
        assert.ok(v1 !== undefined);
        assert.equal(v1.createdBy, 'config');
        assert.ok(v1.comment.includes(file), v1.comment);
        assert.deepEqual(v1.policies.map((p) => p.id), ['everything-password']);
        assert.equal(v1.policies[0]?.tokenTtlSeconds, 120);
        // The file is not read again once version 1 exists (it may even be gone or broken).
        writeFileSync(file, INVALID_SEED);
        await createGateway(config, options(store));
        assert.deepEqual(await policyRows(store), { sets: 1, events: 1 });
      });
    });

    it('an invalid or unreadable seed file stops the start with a ConfigError naming each problem; nothing is stored', async () => {
      await withDatabase(dialect, async (database, stores) => {
        const file = join(database.dataDir, 'bad.yaml');
        writeFileSync(file, INVALID_SEED);
        const store = await openStore(database, stores);
        await assert.rejects(createGateway(testConfig(database, { policies: { seedFile: file } }), options(store)), (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.key, 'policies.seedFile');
          assert.match(err.message, new RegExp(`${file}:5: /policies/0/require/anyOf/0: acr_unreachable:`));
          assert.match(err.message, /:7: \/policies\/1\/id: duplicate_id:/);
          assert.match(err.message, /:10: \/policies\/1\/require\/anyOf\/0\/0: unknown_factor_type:/);
          return true;
        });
        await assert.rejects(createGateway(testConfig(database, { policies: { seedFile: join(database.dataDir, 'missing.yaml') } }), options(store)), (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, /cannot read .*missing\.yaml \(ENOENT\)/);
          return true;
        });
        assert.deepEqual(await policyRows(store), { sets: 0, events: 0 });
        // Fixed: the next start seeds.
        writeFileSync(file, SEED);
        await createGateway(testConfig(database, { policies: { seedFile: file } }), options(store));
        assert.deepEqual(await policyRows(store), { sets: 1, events: 1 });
      });
    });

    it('processes starting at once on one database seed exactly once', async () => {
      await withDatabase(dialect, async (database, stores) => {
        const store = await openStore(database, stores);
        await store.migrate();
        // Real processes: on SQLite, connections of one process would wait for each other on the one thread.
        const runs = await Promise.all(Array.from({ length: 3 }, () => stepgate(database, 'policies', 'history', '--json')));
        for (const run of runs) {
          assert.equal(run.code, 0, run.stderr);
          assert.deepEqual(JSON.parse(run.stdout).versions.map((v: { version: number; createdBy: string }) => [v.version, v.createdBy]), [[1, 'config']]);
        }
        assert.deepEqual(await policyRows(store), { sets: 1, events: 1 });
      });
    });

    if (dialect === 'postgres') {
      it('concurrent seeding through one pool: one insert wins, the others find version 1 taken', async () => {
        await withDatabase(dialect, async (database, stores) => {
          const config = testConfig(database);
          const first = await openStore(database, stores);
          await first.migrate();
          const gateways = await Promise.all(Array.from({ length: 4 }, async () => createGateway(config, { ...options(await openStore(database, stores)), migrate: false })));
          const results = await Promise.all(gateways.map((gw) => seedPolicySet(gw)));
          assert.deepEqual(results.filter((r) => r === 1), [1], `one process stored version 1: ${JSON.stringify(results)}`);
          assert.deepEqual(await policyRows(first), { sets: 1, events: 1 });
          assert.equal(await seedPolicySet(gateways[0]!), undefined);
        });
      });
    }
  });
}

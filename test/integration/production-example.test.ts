import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createApp } from '../../src/app.ts';
import { FixedClock } from '../../src/clock.ts';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';
import { createGateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/logger.ts';
import request from 'supertest';
import { createTestDatabase, testDialects } from '../helpers/stores.ts';

/**
 * config/production.example.yaml is what an operator starts from: it must load in
 * production mode given exactly the environment its header documents, and fail with the
 * documented one-line error without it.
 */

const FILE = fileURLToPath(new URL('../../config/production.example.yaml', import.meta.url));
const KEY = randomBytes(32).toString('base64');
const DOCUMENTED_ENV = { STEPGATE_MASTER_KEY: KEY, STEPGATE_DATABASE_URL: 'postgres://stepgate:db-password@db.internal:5432/stepgate' };

describe('config/production.example.yaml', () => {
  it('documents the environment it needs', () => {
    const text = readFileSync(FILE, 'utf8');
    for (const name of Object.keys(DOCUMENTED_ENV)) assert.match(text, new RegExp(`^#\\s+${name}\\s+required`, 'm'), name);
  });

  it('loads in production mode with the documented environment', () => {
    const c = loadConfig({ file: FILE, env: DOCUMENTED_ENV });
    assert.equal(c.mode, 'production');
    assert.match(c.http.publicUrl, /^https:\/\//);
    assert.equal(c.http.trustProxyHops, 1);
    assert.equal(c.database.url, DOCUMENTED_ENV.STEPGATE_DATABASE_URL);
    assert.equal(c.secrets.masterKey, KEY);
  });

  it('refuses to load without the master key, naming it', () => {
    assert.throws(
      () => loadConfig({ file: FILE, env: { STEPGATE_DATABASE_URL: DOCUMENTED_ENV.STEPGATE_DATABASE_URL } }),
      (err: unknown) => err instanceof ConfigError && err.key === 'secrets.masterKey',
    );
  });

  for (const dialect of testDialects().filter((d) => d === 'postgres')) {
    it('starts a production gateway on PostgreSQL with it', async () => {
      const database = await createTestDatabase(dialect);
      const config = loadConfig({ file: FILE, env: { STEPGATE_MASTER_KEY: KEY, STEPGATE_DATABASE_URL: database.url, STEPGATE_DATABASE_SCHEMA: database.schema } });
      const gw = await createGateway(config, { clock: new FixedClock(), logger: createLogger('silent') });
      try {
        const { app } = createApp(gw);
        const ready = await request(app).get('/readyz');
        assert.equal(ready.status, 200, ready.text);
        assert.match(String(ready.headers['strict-transport-security']), /max-age=/);
        const discovery = await request(app).get('/.well-known/stepgate-configuration');
        assert.equal(discovery.body.issuer, 'https://mfa.example.com');
      } finally {
        await gw.close();
        await database.drop();
      }
    });
  }
});

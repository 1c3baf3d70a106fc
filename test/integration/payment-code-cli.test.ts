import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type Command, parseCommandArgs } from '../../src/cli/command.ts';
import {
  paymentCodeApiKeysCreateCommand,
  paymentCodeApiKeysListCommand,
  paymentCodeApiKeysRevokeCommand,
  paymentCodeClientKeyCommand,
  paymentCodeEventsVerifyCommand,
  paymentCodeKeysListCommand,
  paymentCodeKeysRetireCommand,
  paymentCodeKeysRotateCommand,
} from '../../src/cli/payment-code-command.ts';
import { authenticateApiKey } from '../../src/payment-code/api-keys.ts';
import { loadPaymentCodeConfig } from '../../src/payment-code/config.ts';
import { openConfiguredPaymentCodeStore } from '../../src/payment-code/service.ts';
import { createPDatabase } from '../helpers/payment-code.ts';
import { testDialects } from '../helpers/stores.ts';

/** The operator commands of the payment-code service, run in process against its own database. */
async function run(command: Command, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await command.run({ ...parseCommandArgs(command, argv), out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

for (const dialect of testDialects()) {
  describe(`stepgate payment-code api-keys / events (${dialect})`, () => {
    it('creates a key shown once, lists it without the key, revokes it at once; the event chain verifies', async () => {
      const db = createPDatabase(dialect);
      try {
        const configFile = join(db.dataDir, 'pc.yaml');
        writeFileSync(configFile, `paymentCode:\n  dataDir: ${JSON.stringify(db.dataDir)}\n  database:\n    url: ${JSON.stringify(db.url)}\n    schema: ${db.schema}\n`);
        const created = await run(paymentCodeApiKeysCreateCommand, ['--name', 'POS network', '--role', 'acquirer', '--json', '--config', configFile]);
        assert.equal(created.code, 0, created.err);
        const { id, api_key: key, role } = JSON.parse(created.out) as { id: string; api_key: string; role: string };
        assert.equal(role, 'acquirer');
        assert.match(key, /^pck_[A-Za-z0-9_-]{43}$/);
        const config = loadPaymentCodeConfig({ file: configFile, env: {} });
        const store = await openConfiguredPaymentCodeStore(config);
        try {
          assert.equal((await authenticateApiKey(store.db, `Bearer ${key}`, 'acquirer')).id, id);
          const row = await store.db.selectFrom('pc_api_keys').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
          assert.ok(!JSON.stringify(row).includes(key.slice(4)), 'only the hash is stored');

          const listed = await run(paymentCodeApiKeysListCommand, ['--json', '--config', configFile]);
          assert.ok(!listed.out.includes(key));
          assert.deepEqual((JSON.parse(listed.out) as { id: string }[]).map((k) => k.id), [id]);
          assert.equal((await run(paymentCodeApiKeysRevokeCommand, [id, '--config', configFile])).code, 0);
          await assert.rejects(authenticateApiKey(store.db, `Bearer ${key}`, 'acquirer'), (e: { code?: string }) => e.code === 'unauthorized');
          assert.equal((await run(paymentCodeApiKeysRevokeCommand, [id, '--config', configFile])).code, 1, 'revoking twice says so');
          const verified = await run(paymentCodeEventsVerifyCommand, ['--config', configFile]);
          assert.equal(verified.code, 0, verified.err);
          assert.match(verified.out, /event chain intact: 2 events/);
        } finally {
          await store.close();
        }
      } finally {
        await db.drop();
      }
    });

    it('keys rotate / list / retire: the new key is published but does not sign yet; the signing key cannot be retired', async () => {
      const db = createPDatabase(dialect);
      try {
        const configFile = join(db.dataDir, 'pc.yaml');
        writeFileSync(configFile, `paymentCode:\n  dataDir: ${JSON.stringify(db.dataDir)}\n  database:\n    url: ${JSON.stringify(db.url)}\n    schema: ${db.schema}\n`);
        const first = await run(paymentCodeKeysRotateCommand, ['--json', '--config', configFile]);
        assert.equal(first.code, 0, first.err);
        const second = await run(paymentCodeKeysRotateCommand, ['--json', '--config', configFile]);
        const k1 = (JSON.parse(first.out) as { kid: string }).kid;
        const k2 = (JSON.parse(second.out) as { kid: string }).kid;
        assert.notEqual(k1, k2);
        const listed = JSON.parse((await run(paymentCodeKeysListCommand, ['--json', '--config', configFile])).out) as { kid: string; status: string; signing: boolean }[];
        assert.deepEqual(listed.map((k) => [k.kid, k.status, k.signing]), [[k1, 'active', true], [k2, 'active', false]]);
        const refused = await run(paymentCodeKeysRetireCommand, [k1, '--config', configFile]);
        assert.equal(refused.code, 1);
        assert.match(refused.err, /signs now: rotate first/);
        assert.equal((await run(paymentCodeKeysRetireCommand, [k2, '--config', configFile])).code, 0);
        assert.equal((await run(paymentCodeKeysRetireCommand, ['pcq-nope', '--config', configFile])).code, 1);
        const after = JSON.parse((await run(paymentCodeKeysListCommand, ['--json', '--config', configFile])).out) as { kid: string; status: string }[];
        assert.deepEqual(after.map((k) => k.status), ['active', 'retired']);
        const verified = await run(paymentCodeEventsVerifyCommand, ['--config', configFile]);
        assert.match(verified.out, /event chain intact: 3 events/, 'two creations and one retirement, audited');
      } finally {
        await db.drop();
      }
    });
  });
}

describe('stepgate payment-code client-key', () => {
  it('writes the private JWK with mode 0600 and prints only the public JWKS; never overwrites', async () => {
    const db = createPDatabase('sqlite');
    try {
      const file = join(db.dataDir, 'client.jwk');
      const res = await run(paymentCodeClientKeyCommand, ['--out', file]);
      assert.equal(res.code, 0, res.err);
      const jwks = JSON.parse(res.out) as { keys: Record<string, string>[] };
      assert.equal(jwks.keys.length, 1);
      assert.equal(jwks.keys[0]?.crv, 'Ed25519');
      assert.equal(jwks.keys[0]?.d, undefined);
      const priv = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
      assert.equal(typeof priv.d, 'string');
      assert.equal(priv.kid, jwks.keys[0]?.kid);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal((await run(paymentCodeClientKeyCommand, ['--out', file])).code, 1);
    } finally {
      await db.drop();
    }
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const EXAMPLE = 'examples/policies-with-password-demo.yaml';

function file(text: string): string {
  const p = join(mkdtempSync(join(tmpdir(), 'stepgate-pol-')), 'p.yaml');
  writeFileSync(p, text);
  return p;
}

for (const dialect of testDialects()) {
  describe(`CLI: policies and signing keys (${dialect})`, () => {
    let tg: TestGateway;
    let env: Record<string, string>;
    before(async () => {
      tg = await createTestGateway({ dialect, clock: { now: () => new Date() } });
      env = cliEnv(tg);
    });
    after(async () => {
      await tg.close();
    });
    const version = async () => Number((await tg.gw.store.db.selectFrom('policy_sets').select('version').orderBy('version', 'desc').limit(1).executeTakeFirstOrThrow()).version);

    it('policies apply --dry-run prints the difference and stores nothing; apply stores a new audited version; the same file again is "no changes"', async () => {
      const before = await version();
      const dry = await runCli(['policies', 'apply', EXAMPLE, '--dry-run'], env);
      assert.equal(dry.status, 0, dry.stderr);
      assert.match(dry.stdout, /Changes to policy set version \d+:/);
      assert.match(dry.stdout, /demo-login-confirm|password/);
      assert.match(dry.stdout, /Dry run: nothing stored\./);
      assert.equal(await version(), before);

      const applied = await runCli(['policies', 'apply', EXAMPLE, '--comment', 'walkthrough'], env);
      assert.equal(applied.status, 0, applied.stderr);
      assert.match(applied.stdout, new RegExp(`Stored as version ${before + 1}\\.`));
      assert.equal(await version(), before + 1);
      const audit = await tg.gw.store.db.selectFrom('audit_log').select(['type', 'data']).where('type', 'like', 'policy%').execute();
      assert.ok(audit.some((a) => a.data.includes('walkthrough')), JSON.stringify(audit));

      const again = await runCli(['policies', 'apply', EXAMPLE], env);
      assert.equal(again.status, 0);
      assert.match(again.stdout, /no changes/);
      assert.equal(await version(), before + 1);
    });

    it('policies export prints a file that applies as "no changes"; history lists the versions', async () => {
      const exported = await runCli(['policies', 'export'], env);
      assert.equal(exported.status, 0, exported.stderr);
      assert.match(exported.stdout, /^# Stepgate policy set version \d+/);
      const roundTrip = await runCli(['policies', 'apply', file(exported.stdout)], env);
      assert.equal(roundTrip.status, 0, roundTrip.stderr);
      assert.match(roundTrip.stdout, /no changes/);
      const history = await runCli(['policies', 'history', '--json'], env);
      assert.equal(history.status, 0, history.stderr);
      const versions = JSON.parse(history.stdout).versions as { version: number }[];
      assert.equal(versions[0]?.version, await version());
    });

    it('policies apply refuses an invalid file with FILE:LINE: pointer lines, exit 1, nothing stored', async () => {
      const before = await version();
      const bad = file('policies:\n  - id: broken\n    action: payment_code.issue\n    priority: 10\n    require: { anyOf: [[fingerprint]] }\n    acr: urn:stepgate:aal9\n');
      const run = await runCli(['policies', 'apply', bad], env);
      assert.equal(run.status, 1);
      assert.match(run.stderr, new RegExp(`${bad.replace(/[/\\.]/g, '\\$&')}:\\d+: /policies/0/`));
      assert.match(run.stderr, /nothing stored/);
      assert.equal(await version(), before);
      assert.equal((await runCli(['policies', 'apply'], env)).status, 2, 'no file is a usage error');
      assert.equal((await runCli(['policies', 'apply', '/nonexistent/p.yaml'], env)).status, 1);
    });

    it('keys rotate publishes the new key at once, keeps the old one, and is audited; keys list shows both', async () => {
      const before = await runCli(['keys', 'list', '--json'], env);
      assert.equal(before.status, 0, before.stderr);
      const oldKeys = JSON.parse(before.stdout) as { kid: string; status: string }[];
      const oldActive = oldKeys.find((k) => k.status === 'active')!;
      const rotated = await runCli(['keys', 'rotate', '--json'], env);
      assert.equal(rotated.status, 0, rotated.stderr);
      const r = JSON.parse(rotated.stdout) as { kid: string; retired_kid: string; retired_published_until: string };
      assert.equal(r.retired_kid, oldActive.kid);
      assert.ok(Date.parse(r.retired_published_until) > Date.now());
      const list = JSON.parse((await runCli(['keys', 'list', '--json'], env)).stdout) as { kid: string; status: string }[];
      assert.deepEqual(new Set(list.map((k) => k.kid)), new Set([oldActive.kid, r.kid]));
      tg.gw.keys.invalidate();
      const jwks = await tg.http().get('/.well-known/jwks.json');
      assert.deepEqual(new Set(jwks.body.keys.map((k: { kid: string }) => k.kid)), new Set([oldActive.kid, r.kid]));
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'signing_key.rotated').execute();
      assert.ok(audit.some((a) => a.data.includes(r.kid)));
      assert.equal((await runCli(['keys', 'rotate', '--alg', 'RS256'], env)).status, 2, 'RS256 is never used');
    });

    it('keys revoke withdraws a compromised key at once and is audited; an unknown kid is exit 1, no reason exit 2', async () => {
      const listed = JSON.parse((await runCli(['keys', 'list', '--json'], env)).stdout) as { kid: string; status: string }[];
      const active = listed.find((k) => k.status === 'active')!.kid;
      assert.equal((await runCli(['keys', 'revoke', active], env)).status, 2, 'a revocation says why');
      assert.equal((await runCli(['keys', 'revoke', '--reason', 'key leaked'], env)).status, 2, 'which key');
      const revoked = await runCli(['keys', 'revoke', active, '--reason', 'key leaked', '--json'], env);
      assert.equal(revoked.status, 0, revoked.stderr);
      const r = JSON.parse(revoked.stdout) as { revoked_kid: string; was_active: boolean; new_kid: string };
      assert.equal(r.revoked_kid, active);
      assert.equal(r.was_active, true);
      tg.gw.keys.invalidate();
      const kids = (await tg.http().get('/.well-known/jwks.json')).body.keys.map((k: { kid: string }) => k.kid);
      assert.ok(!kids.includes(active));
      assert.ok(kids.includes(r.new_kid));
      assert.notEqual((await tg.gw.keys.activeKey()).kid, active);
      const list = JSON.parse((await runCli(['keys', 'list', '--json'], env)).stdout) as { kid: string }[];
      assert.ok(!list.some((k) => k.kid === active));
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'signing_key.revoked').execute();
      assert.ok(audit.some((a) => a.data.includes(active) && a.data.includes('key leaked')));
      const again = await runCli(['keys', 'revoke', active, '--reason', 'key leaked'], env);
      assert.equal(again.status, 1);
      assert.match(again.stderr, /no published signing key/);
      // A thumbprint kid starts with "-" one time in 64, and "-c…" would read as --config.
      const dashKid = `-c${'A'.repeat(41)}`;
      const dashed = await runCli(['keys', 'revoke', dashKid, '--reason', 'key leaked'], env);
      assert.equal(dashed.status, 1, dashed.stderr);
      assert.ok(dashed.stderr.includes(`no published signing key ${dashKid}`), dashed.stderr);
    });
  });
}

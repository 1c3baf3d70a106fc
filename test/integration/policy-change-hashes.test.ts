import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type request from 'supertest';
import { parse as parseYaml } from 'yaml';
import { policySetSha256 } from '../../src/flows/policies.ts';
import { createUser } from '../../src/flows/users.ts';
import type { Policy } from '../../src/policy/policy-schema.ts';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { needTool } from '../helpers/env.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * `policy.changed` records which exact sets a change went from and to: the previous and new
 * version, and the SHA-256 of each set's canonical JSON (docs/operations.md "Policy changes
 * in the audit log"), written in the transaction that stores the version. An auditor
 * recomputes both from the exports (the API's versions, `stepgate policies export`) with an
 * independent implementation (python3's json + hashlib here).
 */

const PASSWORD = 'a long enough passphrase 7';
const ACTION = 'payment_code.issue';
const EMPTY_SET_SHA256 = createHash('sha256').update('[]').digest('hex');

const SET_A = [
  { id: 'pwd-small', action: ACTION, priority: 10, description: '小额支付 "quoted" \\ back-slash', when: { amount: { lte: '1000.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
  { id: 'strict', action: ACTION, priority: 20, require: { anyOf: [['webauthn'], ['hardware_otp', 'password']] }, acr: 'urn:stepgate:aal2' },
];
const SET_B = [{ ...SET_A[0], priority: 15 }, SET_A[1]];

/** What an auditor runs: sorted keys, no whitespace, UTF-8, SHA-256 — nothing of ours. */
const PYTHON = `import sys, json, hashlib
body = json.load(sys.stdin)
policies = body['policies'] if isinstance(body, dict) else body
print(hashlib.sha256(json.dumps(policies, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')).hexdigest())`;
/** `json`: an API answer with `policies`, or the list itself. */
function pythonSha256(policiesJson: string): string {
  return execFileSync('python3', ['-c', PYTHON], { input: policiesJson, encoding: 'utf8' }).trim();
}

for (const dialect of testDialects()) {
  describe(`policy.changed carries the before/after version and set hashes (${dialect})`, () => {
    let t: TestGateway;
    let root: { agent: request.Agent; csrf: string };

    async function events(): Promise<Record<string, unknown>[]> {
      const rows = await t.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'policy.changed').orderBy('seq').execute();
      return rows.map((r) => JSON.parse(r.data) as Record<string, unknown>);
    }
    async function exported(version: number): Promise<{ text: string; policies: Policy[] }> {
      const res = await root.agent.get(`/v1/admin/policies/versions/${version}`).expect(200);
      // The answer's bytes as sent, not a re-serialisation of ours.
      return { text: res.text, policies: res.body.policies as Policy[] };
    }
    async function put(policies: unknown[]): Promise<number> {
      const res = await root.agent.put('/v1/admin/policies').set('X-CSRF-Token', root.csrf).send({ policies, comment: 'hash test' });
      assert.equal(res.status, 200, res.text);
      return res.body.version as number;
    }

    before(async () => {
      t = await createTestGateway({ dialect });
      await createUser(t.gw, { username: 'root', password: PASSWORD, roles: ['admin'] }, { actor: 'test' });
      const agent = t.agent();
      const res = await agent.post('/v1/login').send({ username: 'root', password: PASSWORD }).expect(200);
      root = { agent, csrf: res.body.csrf_token as string };
    });
    after(async () => {
      await t.close();
    });

    it('the seeded version 1 goes from version 0, the empty set, to the seed', async () => {
      const [seed] = await events();
      assert.ok(seed, 'the seed is audited');
      assert.equal(seed.version, 1);
      assert.equal(seed.previousVersion, 0);
      assert.equal(seed.previousSetSha256, EMPTY_SET_SHA256);
      assert.equal(seed.previousSetSha256, '4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945', 'SHA-256 of "[]"');
      assert.equal(seed.setSha256, policySetSha256((await exported(1)).policies));
    });

    it('each change records the previous and new version and hashes; consecutive records chain; an auditor recomputes them from the exports', async (tc) => {
      const v1 = (await events()).length;
      const a = await put(SET_A);
      const b = await put(SET_B);
      assert.equal(b, a + 1);
      const all = await events();
      assert.equal(all.length, v1 + 2);
      const [toA, toB] = all.slice(-2) as [Record<string, unknown>, Record<string, unknown>];
      assert.deepEqual([toA.previousVersion, toA.version, toB.previousVersion, toB.version], [a - 1, a, a, b]);
      const [prev, setA, setB] = [await exported(a - 1), await exported(a), await exported(b)];
      assert.equal(toA.previousSetSha256, policySetSha256(prev.policies));
      assert.equal(toA.setSha256, policySetSha256(setA.policies));
      assert.equal(toB.previousSetSha256, toA.setSha256, 'the records chain: from = the previous record\'s to');
      assert.equal(toB.setSha256, policySetSha256(setB.policies));
      assert.notEqual(toA.setSha256, toB.setSha256, 'one changed priority is a different hash');
      for (const d of [toA, toB]) {
        assert.match(String(d.previousSetSha256), /^[0-9a-f]{64}$/);
        assert.match(String(d.setSha256), /^[0-9a-f]{64}$/);
      }
      // Nothing saved, nothing recorded: the same set again, and an invalid one.
      assert.equal(await put(SET_B), b);
      const bad = await root.agent.put('/v1/admin/policies').set('X-CSRF-Token', root.csrf).send({ policies: [{ ...SET_A[1], acr: 'urn:stepgate:aal9' }] });
      assert.equal(bad.status, 400, bad.text);
      assert.equal((await events()).length, v1 + 2);

      // An independent implementation, from the API's export of each version.
      if (needTool(tc, 'python3', 'python3')) return;
      assert.equal(pythonSha256(prev.text), toA.previousSetSha256);
      assert.equal(pythonSha256(setA.text), toA.setSha256);
      assert.equal(pythonSha256(setB.text), toB.setSha256);
    });

    it('from `stepgate policies export` (YAML): the same hash', async (tc) => {
      const last = (await events()).at(-1) as Record<string, unknown>;
      const run = await runCli(['policies', 'export', '--version', String(last.version)], cliEnv(t));
      assert.equal(run.status, 0, run.stderr);
      const policies = (parseYaml(run.stdout) as { policies: Policy[] }).policies;
      assert.equal(policySetSha256(policies), last.setSha256);
      if (needTool(tc, 'python3', 'python3')) return;
      assert.equal(pythonSha256(JSON.stringify(policies)), last.setSha256);
    });
  });
}

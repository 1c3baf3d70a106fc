import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FactorRecord } from '../../src/factors/factor.ts';
import { PasswordHasher, Semaphore } from '../../src/factors/password/hasher.ts';
import { createPasswordFactor } from '../../src/factors/password/password-factor.ts';
import { normalisePassword } from '../../src/factors/password/policy.ts';

const PARAMS = { memoryKiB: 19456, iterations: 2, parallelism: 1 };
const hasher = new PasswordHasher(PARAMS);
const factor = createPasswordFactor(hasher);
const ctx = { now: new Date(Date.UTC(2026, 0, 1)) };

function record(secretHash: string | null, status: FactorRecord['status'] = 'active'): FactorRecord {
  return { id: 'fac_1', userId: 'usr_1', type: 'password', label: '', status, secretHash, secretSealed: null, params: {}, counter: 0 };
}

describe('password hasher (argon2id)', () => {
  it('makes argon2id PHC strings with the configured parameters (m=19456 KiB, t=2, p=1)', async () => {
    const phc = await hasher.hash('tangerine-lamp-41');
    assert.match(phc, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
    assert.equal(await hasher.verify(phc, 'tangerine-lamp-41'), true);
    assert.equal(await hasher.verify(phc, 'tangerine-lamp-42'), false);
    assert.notEqual(await hasher.hash('tangerine-lamp-41'), phc, 'salted');
  });

  it('never truncates: 100-character passwords differing only in the last character differ', async () => {
    const a = `${'k9#Lm2'.repeat(16)}abcX`;
    const b = `${'k9#Lm2'.repeat(16)}abcY`;
    assert.equal(a.length, 100);
    const phc = await hasher.hash(a);
    assert.equal(await hasher.verify(phc, a), true);
    assert.equal(await hasher.verify(phc, b), false);
    const outcome = await factor.verify(record(phc), { password: b }, ctx);
    assert.equal(outcome.ok, false);
  });

  it('asks for a rehash when the parameters change, and not otherwise', async () => {
    const phc = await hasher.hash('tangerine-lamp-41');
    assert.equal(hasher.needsRehash(phc), false);
    assert.equal(new PasswordHasher({ ...PARAMS, iterations: 3 }).needsRehash(phc), true);
    assert.equal(new PasswordHasher({ ...PARAMS, memoryKiB: 24576 }).needsRehash(phc), true);
    assert.equal(new PasswordHasher({ ...PARAMS, parallelism: 2 }).needsRehash(phc), true);
    assert.equal(hasher.needsRehash('$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA'), true);
    assert.equal(hasher.needsRehash('not a hash'), true);
  });

  it('treats a malformed stored hash as a failed verification, not an error', async () => {
    assert.equal(await hasher.verify('$argon2id$garbage', 'whatever-it-is'), false);
  });
});

describe('password factor', () => {
  it('is a direct factor proving pwd', () => {
    assert.equal(factor.type, 'password');
    assert.equal(factor.descriptor.kind, 'direct');
    assert.deepEqual(factor.descriptor.amr, ['pwd']);
  });

  it('verifies NFKC-equivalent input against the normalised hash', async () => {
    const phc = await hasher.hash(normalisePassword('ｃｏｒｒｅｃｔ ｈｏｒｓｅ ９'));
    const outcome = await factor.verify(record(phc), { password: 'correct horse 9' }, ctx);
    assert.equal(outcome.ok, true);
    assert.equal(outcome.change, undefined);
  });

  it('returns the new hash as a state change when parameters changed (writes nothing itself)', async () => {
    const old = await new PasswordHasher({ ...PARAMS, iterations: 3 }).hash('tangerine-lamp-41');
    const outcome = await factor.verify(record(old), { password: 'tangerine-lamp-41' }, ctx);
    assert.equal(outcome.ok, true);
    assert.ok(outcome.change !== undefined);
    assert.match(outcome.change.secretHash, /\$m=19456,t=2,p=1\$/);
    assert.equal(await hasher.verify(outcome.change.secretHash, 'tangerine-lamp-41'), true);
  });

  it('fails for a missing, disabled or hash-less record after doing the same work', async () => {
    const phc = await hasher.hash('tangerine-lamp-41');
    for (const r of [undefined, record(phc, 'disabled'), record(null)]) {
      const outcome = await factor.verify(r, { password: 'tangerine-lamp-41' }, ctx);
      assert.equal(outcome.ok, false);
    }
  });

  it('fails, not throws, on input of the wrong shape', async () => {
    const phc = await hasher.hash('tangerine-lamp-41');
    for (const input of [undefined, null, 42, {}, { password: 7 }]) {
      const outcome = await factor.verify(record(phc), input as never, ctx);
      assert.equal(outcome.ok, false);
    }
  });
});

describe('argon2 concurrency cap', () => {
  it('never runs more than its size at once, and runs everything', async () => {
    const sem = new Semaphore(2);
    let inFlight = 0;
    let peak = 0;
    const done: number[] = [];
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        sem.run(async () => {
          inFlight += 1;
          peak = Math.max(peak, inFlight);
          await new Promise((r) => setTimeout(r, 5));
          inFlight -= 1;
          done.push(i);
        }),
      ),
    );
    assert.equal(peak, 2);
    assert.equal(done.length, 10);
    assert.equal(sem.active, 0);
    assert.equal(sem.waiting, 0);
  });

  it('releases its slot when the task fails', async () => {
    const sem = new Semaphore(1);
    await assert.rejects(sem.run(async () => Promise.reject(new Error('boom'))));
    assert.equal(await sem.run(async () => 'next'), 'next');
    assert.equal(sem.active, 0);
  });

  it('caps real hashes: 8 parallel hashes through a 2-slot hasher', async () => {
    const sem = new Semaphore(2);
    const capped = new PasswordHasher(PARAMS, sem);
    const hashes = Array.from({ length: 8 }, (_, i) => capped.hash(`parallel-password-${i}`));
    await new Promise((r) => setImmediate(r));
    assert.ok(sem.active <= 2);
    assert.equal(sem.waiting, 6);
    assert.equal((await Promise.all(hashes)).length, 8);
  });
});

describe('argon2 admission (no queue for sign-ins)', () => {
  it('admits up to the size, refuses the next at once with overloaded, and frees the slot after', async () => {
    const slots = new Semaphore(1);
    const h = new PasswordHasher(PARAMS, slots);
    const phc = await h.hash('tangerine-lamp-41');
    let inside!: () => void;
    const holding = h.admit(() => new Promise<void>((resolve) => (inside = resolve)));
    await assert.rejects(h.admit(async () => 'never'), (err: { code?: string; status?: number; retryAfterSeconds?: number }) => err.code === 'overloaded' && err.status === 503 && err.retryAfterSeconds === 1);
    assert.equal(slots.waiting, 0, 'nobody queues');
    inside();
    await holding;
    assert.equal(slots.active, 0);
    assert.equal(await h.admit(() => h.verify(phc, 'tangerine-lamp-41')), true);
  });

  it('a sign-in flood holding every slot cannot starve a step-up: the step-up lane has a slot of its own, and only one', async () => {
    const slots = new Semaphore(2);
    const h = new PasswordHasher(PARAMS, slots);
    const f = createPasswordFactor(h);
    const phc = await h.hash('tangerine-lamp-41');
    const releases: (() => void)[] = [];
    const flood = [0, 1].map(() => h.admit(() => new Promise<void>((resolve) => releases.push(resolve))));
    await new Promise((r) => setImmediate(r));
    assert.equal(slots.active, 2, 'the sign-ins hold every regular slot');
    await assert.rejects(h.admit(async () => 'never'), (err: { code?: string }) => err.code === 'overloaded', 'a third sign-in is refused');
    let stepUpInside!: () => void;
    const stepUp = f.admit!(async () => {
      await new Promise<void>((resolve) => (stepUpInside = resolve));
      return h.verify(phc, 'tangerine-lamp-41');
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(slots.active, 3, 'the step-up got the reserved slot');
    await assert.rejects(f.admit!(async () => 'never'), (err: { code?: string }) => err.code === 'overloaded', 'the lane is one slot: a second step-up beyond it is refused too');
    await assert.rejects(h.admit(async () => 'never'), (err: { code?: string }) => err.code === 'overloaded', 'and sign-ins cannot use the reserved slot');
    stepUpInside();
    assert.equal(await stepUp, true);
    for (const release of releases) release();
    await Promise.all(flood);
    assert.equal(slots.active, 0);
  });

  it('hashes inside an admitted section with the slot it holds (verify, then rehash, on a full semaphore)', async () => {
    const slots = new Semaphore(1);
    const h = new PasswordHasher(PARAMS, slots);
    const old = await new PasswordHasher({ ...PARAMS, iterations: 3 }, new Semaphore(1)).hash('tangerine-lamp-41');
    const f = createPasswordFactor(h);
    const outcome = await h.admit(() => f.verify(record(old), { password: 'tangerine-lamp-41' }, ctx));
    assert.equal(outcome.ok, true);
    assert.ok(outcome.ok && outcome.change !== undefined, 'rehashed without a second slot');
    assert.equal(slots.active, 0);
  });

  it('tryAcquire releases once however often the release is called', () => {
    const slots = new Semaphore(2);
    const a = slots.tryAcquire();
    const b = slots.tryAcquire();
    assert.ok(a !== undefined && b !== undefined);
    assert.equal(slots.tryAcquire(), undefined);
    a();
    a();
    assert.equal(slots.active, 1);
    b();
    assert.equal(slots.active, 0);
  });
});

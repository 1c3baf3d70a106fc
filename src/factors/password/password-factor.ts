import type { Factor, FactorRecord, VerifyOutcome } from '../factor.ts';
import type { PasswordHasher } from './hasher.ts';
import { normalisePassword } from './policy.ts';

export interface PasswordInput {
  password: string;
}

/** The state change a successful verification may ask for: the same password under the current parameters. */
export interface PasswordChange {
  secretHash: string;
}

export type PasswordFactor = Factor<PasswordInput, PasswordChange> & { readonly hasher: PasswordHasher };

/**
 * The password factor: direct, proves `pwd`. A missing, disabled or hash-less record is
 * verified against the hasher's dummy hash, so "no such user" costs what "wrong password" does.
 */
export function createPasswordFactor(hasher: PasswordHasher): PasswordFactor {
  return {
    type: 'password',
    descriptor: { kind: 'direct', amr: ['pwd'], possession: false, multiple: false },
    hasher,
    // Used by the step-up flow only (sign-in calls hasher.admit): the step-up lane.
    admit: (work) => hasher.admitStepUp(work),
    async verify(record: FactorRecord | undefined, input: PasswordInput): Promise<VerifyOutcome<PasswordChange>> {
      // Callers may pass unvalidated input (the step-up API's `input: unknown`).
      const given = (input as { password?: unknown } | null | undefined)?.password;
      const password = normalisePassword(typeof given === 'string' ? given : '');
      const phc = record?.status === 'active' ? record.secretHash : null;
      if (phc === null || phc === undefined) {
        await hasher.verifyDummy(password);
        return { ok: false, reason: record === undefined ? 'not_enrolled' : 'invalid' };
      }
      if (!(await hasher.verify(phc, password))) return { ok: false, reason: 'invalid' };
      if (!hasher.needsRehash(phc)) return { ok: true, amr: ['pwd'] };
      return { ok: true, amr: ['pwd'], change: { secretHash: await hasher.hash(password) } };
    },
  } satisfies PasswordFactor;
}

import type { Factor, FactorRecord, VerifyOutcome } from '../factor.ts';
import { useRecoveryCode } from './recovery-code-set.ts';

export interface RecoveryCodeInput {
  code: string;
}

/**
 * The new set (the used code's slot emptied) and the next version. `counter` is the set's
 * version: the flow writes the change only `WHERE counter < :next`, so of two concurrent
 * uses — of one code or of two — exactly one is written and the other fails (retry), and
 * no write ever brings back a used code. Regenerating a set starts a new row.
 */
export interface RecoveryCodeChange {
  secretHash: string;
  counter: number;
  params: Record<string, unknown>;
}

export type RecoveryCodeFactor = Factor<RecoveryCodeInput, RecoveryCodeChange>;

/**
 * Recovery codes: single-use lookup secrets, a direct factor proving `otp` (RFC 8176's
 * one-time password). Not a possession factor (a printed sheet is copied as easily as it is
 * read), so alone it reaches aal1 only; it is usable only where a policy names
 * `recovery_code` (the demo payment policies do not).
 */
export function createRecoveryCodeFactor(): RecoveryCodeFactor {
  return {
    type: 'recovery_code',
    descriptor: { kind: 'direct', amr: ['otp'], possession: false, multiple: false },
    async verify(record: FactorRecord | undefined, input: RecoveryCodeInput): Promise<VerifyOutcome<RecoveryCodeChange>> {
      if (record === undefined || record.status !== 'active' || record.secretHash === null) return { ok: false, reason: 'not_enrolled' };
      const code = (input as { code?: unknown } | null | undefined)?.code;
      const match = useRecoveryCode(record.secretHash, code);
      if (!match.ok) return { ok: false, reason: 'invalid' };
      return {
        ok: true,
        amr: ['otp'],
        change: { secretHash: match.stored, counter: record.counter + 1, params: { ...record.params, remaining: match.remaining } },
      };
    },
  } satisfies RecoveryCodeFactor;
}

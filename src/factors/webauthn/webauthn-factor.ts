import { AppError } from '../../errors/app-error.ts';
import type { ChallengeContext, ChallengeStart, Factor, FactorRecord, FactorContext, LiveChallenge, VerifyOutcome } from '../factor.ts';
import { assertionCredentialId, authenticationOptions, newChallenge, verifyAssertion } from './ceremony.ts';
import { assuranceOf, type CredentialParams, isDeviceBound, parseCredentialParams, storedCredential, userHandleOf } from './credential.ts';
import type { WebAuthnSettings } from './settings.ts';

/**
 * The `webauthn` factor in step-up: a challenge factor. `startChallenge` issues request
 * options for the user's credentials (only device-bound ones when the step-up needs aal3)
 * with a fresh 32-byte challenge; the flow stores it, expires it with the step-up and
 * consumes it once. `verify` checks the assertion against that challenge and the one
 * credential it names, and returns what to write: the new counter and backup state, or —
 * when the counter went backwards — a "possibly cloned" flag.
 */

export interface WebAuthnInput {
  /** AuthenticationResponseJSON from @simplewebauthn/browser's startAuthentication. */
  credential: unknown;
}

export interface WebAuthnChange {
  counter?: number;
  params?: Record<string, unknown>;
  audit?: { type: `factor.${string}`; data: Record<string, unknown> };
}

export interface WebAuthnChallengeState {
  challenge: string;
  /** The credential ids the options offered: an assertion by any other is refused. */
  allowed: string[];
}

export type WebAuthnFactor = Factor<WebAuthnInput, WebAuthnChange> & { readonly settings: WebAuthnSettings };

const AAL3 = 'urn:stepgate:aal3';

function credentialOf(input: unknown): unknown {
  return (input as { credential?: unknown } | null | undefined)?.credential;
}

function challengeState(challenge: LiveChallenge | undefined): WebAuthnChallengeState | undefined {
  const state = challenge?.state;
  if (state === undefined || typeof state.challenge !== 'string' || !Array.isArray(state.allowed)) return undefined;
  return { challenge: state.challenge, allowed: state.allowed.filter((x): x is string => typeof x === 'string') };
}

/** Flagged credentials are refused under `refuse` (a clone may exist); `flag-only` keeps using them. */
function usable(params: CredentialParams, settings: WebAuthnSettings): boolean {
  return params.flaggedAt === undefined || settings.counterRegression === 'flag-only';
}

export interface WebAuthnFactorDeps {
  settings: WebAuthnSettings;
}

export function createWebAuthnFactor(deps: WebAuthnFactorDeps): WebAuthnFactor {
  const { settings } = deps;
  return {
    type: 'webauthn',
    settings,
    descriptor: {
      kind: 'challenge',
      // The best case; each proof reports its own (hwk or swk, always user).
      amr: ['hwk', 'user'],
      possession: true,
      multiple: true,
      challenge: {
        // The browser gives up after timeoutSeconds; a little slack for the round trip.
        ttlSeconds: settings.timeoutSeconds + 30,
        // Per step-up, across "try again" clicks (each click is a new challenge).
        maxAttempts: 3,
        resendCooldownSeconds: 1,
        maxSends: 10,
      },
    },

    async startChallenge(records: readonly FactorRecord[], ctx: ChallengeContext): Promise<ChallengeStart> {
      if (settings.unavailable !== undefined) throw new AppError('service_unavailable', { detail: 'WebAuthn is not configured on this gateway.' });
      const offered = records.flatMap((r) => {
        const params = parseCredentialParams(r.params);
        if (params === undefined || !usable(params, settings)) return [];
        // A synced passkey cannot complete an aal3 step-up: do not offer it there.
        if (ctx.purpose.acr === AAL3 && !isDeviceBound(params)) return [];
        return [{ id: r.id, params }];
      });
      if (offered.length === 0) {
        throw new AppError('factor_not_allowed', { invalidParams: [{ pointer: '/factor', reason: 'no registered credential can reach the level this step-up needs' }] });
      }
      const challenge = newChallenge();
      const options = await authenticationOptions(settings, {
        challenge,
        allow: offered.map((o) => ({ credentialId: o.params.credentialId, transports: o.params.transports })),
      });
      const state: WebAuthnChallengeState = { challenge, allowed: offered.map((o) => o.params.credentialId) };
      return { publicData: { options }, state: { ...state }, ...(offered.length === 1 ? { factorId: offered[0]!.id } : {}) };
    },

    resolveFactor(records: readonly FactorRecord[], input: unknown, challenge: LiveChallenge | undefined): FactorRecord | undefined {
      const id = assertionCredentialId(credentialOf(input));
      const state = challengeState(challenge);
      if (id === undefined || state === undefined || !state.allowed.includes(id)) return undefined;
      return records.find((r) => parseCredentialParams(r.params)?.credentialId === id);
    },

    async verify(record: FactorRecord | undefined, input: WebAuthnInput, ctx: FactorContext): Promise<VerifyOutcome<WebAuthnChange>> {
      if (record === undefined || record.status !== 'active') return { ok: false, reason: 'not_enrolled' };
      const state = challengeState(ctx.challenge);
      if (state === undefined) return { ok: false, reason: 'expired', detail: 'no_live_challenge' };
      const params = parseCredentialParams(record.params);
      if (params === undefined) return { ok: false, reason: 'invalid', detail: 'credential_record_unreadable' };
      if (!usable(params, settings)) return { ok: false, reason: 'locked', detail: 'credential_flagged' };
      if (!state.allowed.includes(params.credentialId)) return { ok: false, reason: 'invalid', detail: 'credential_not_offered' };

      const outcome = await verifyAssertion(settings, { response: credentialOf(input), expectedChallenge: state.challenge, credential: storedCredential(params, record.counter) });
      if (!outcome.ok) {
        if (outcome.reason === 'counter_regressed') {
          const flagged = { ...params, flaggedAt: ctx.now.getTime(), flagReason: 'counter_regressed' };
          return {
            ok: false,
            reason: 'replayed',
            detail: 'counter_regressed',
            change: { params: flagged, audit: { type: 'factor.flagged', data: { factorType: 'webauthn', reason: 'counter_regressed', policy: 'refuse', ...outcome.counter } } },
          };
        }
        return { ok: false, reason: 'invalid', detail: outcome.reason };
      }
      // A discoverable credential returns the user handle we registered: it must be this user's.
      if (outcome.userHandle !== undefined && !Buffer.from(outcome.userHandle, 'base64url').equals(userHandleOf(record.userId))) {
        return { ok: false, reason: 'invalid', detail: 'user_handle_mismatch' };
      }
      const { amr, acr } = assuranceOf(params);
      const next: CredentialParams = { ...params, backedUp: outcome.backedUp };
      const change: WebAuthnChange = {};
      if (outcome.counterRegressed) {
        Object.assign(next, { flaggedAt: params.flaggedAt ?? ctx.now.getTime(), flagReason: 'counter_regressed' });
        change.audit = { type: 'factor.flagged', data: { factorType: 'webauthn', reason: 'counter_regressed', policy: 'flag-only', stored: record.counter, presented: outcome.newCounter } };
      }
      // Only a counter that moved forward is written (the flow's replay guard: counter < new).
      if (outcome.newCounter > record.counter) change.counter = outcome.newCounter;
      if (next.backedUp !== params.backedUp || next.flaggedAt !== params.flaggedAt) change.params = next;
      return { ok: true, amr, acr, ...(Object.keys(change).length === 0 ? {} : { change }) };
    },
  } satisfies WebAuthnFactor;
}

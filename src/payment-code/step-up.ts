import {
  type JsonObject,
  type JwksCache,
  type ReplayStore,
  type StepUpAcr,
  type StepUpClaims,
  StepUpTokenError,
  type VerifierClock,
  VerifierUnavailableError,
  verifyStepUpToken,
} from '../verifier/index.ts';
import { PaymentCodeError, type PaymentCodeErrorCode, type StepUpChallenge } from './errors.ts';
import { canonicalJson, type EventLog } from './events.ts';
import type { GatewayClient } from './gateway-client.ts';
import type { Logger } from './logger.ts';
import type { PaymentCodeSealer } from './sealer.ts';
import type { PcDb, PcTx } from './store/database.ts';
import { jtiRecorded, recordJti } from './store/replay-store.ts';
import type { StepUpAction, StepUpsTable } from './store/schema.ts';

/**
 * "No code without a step-up token bound to this exact request", for every action of this
 * service. Two calls make one issuance:
 *
 * 1. `begin`: the wallet asks without a step-up. We ask the gateway for a step-up bound to the
 *    exact context, remember it (with the caller who asked), and answer 401 with the RFC 9470
 *    challenge plus `stepup_id`, `user_url` and `ticket`.
 * 2. `complete`: the wallet asks again with `stepup_id`. We fetch the token from the gateway
 *    (once; it is kept sealed until used, so a retry after a refused context still works),
 *    verify it with src/verifier against the context of THIS request — signature, iss, aud =
 *    our client id, exp, acr, action, exact context, jti not used before — and hand the
 *    claims to the caller, which marks the step-up used and records the jti (table
 *    `pc_stepup_replay`) in the same transaction that creates the code or seed: a write that
 *    fails or times out (queryTimeoutMs) rolls all of it back, so the token is never used up
 *    without its code, and the same request can be sent again.
 */
export interface StepUpGateDeps {
  db: PcDb;
  sealer: PaymentCodeSealer;
  events: EventLog;
  clock: VerifierClock;
  gateway: GatewayClient;
  jwks: JwksCache;
  logger: Logger;
  issuer: string;
  requiredAcr: Record<StepUpAction, StepUpAcr>;
  maxAuthAgeSeconds: number;
  clockToleranceSeconds: number;
  /** Where the time of each phase goes (metrics, the bench). */
  observe: PhaseObserver;
}

/** Phases of a request whose duration is worth knowing (seconds of wall time). */
export type Phase = 'gateway_token' | 'token_verification' | 'code_write' | 'render' | 'redeem';
export type PhaseObserver = (phase: Phase, seconds: number) => void;

/** Runs `fn`, reporting its duration (also when it throws). */
export async function timed<T>(observe: PhaseObserver, phase: Phase, fn: () => Promise<T>): Promise<T> {
  const started = process.hrtime.bigint();
  try {
    return await fn();
  } finally {
    observe(phase, Number(process.hrtime.bigint() - started) / 1e9);
  }
}

export type StepUpContext = Record<string, string | number | boolean>;

export interface BeginStepUp {
  owner: string;
  action: StepUpAction;
  subject: string;
  context: StepUpContext;
  bindingMessage: string;
  redirectUri?: string;
  state?: string;
  requestId?: string;
  /** Maps the gateway's field pointers to the caller's request. */
  pointerMap: (pointer: string) => string;
}

export interface CompleteStepUp {
  owner: string;
  action: StepUpAction;
  subject: string;
  stepupId: string;
  context: StepUpContext;
}

export interface VerifiedStepUp {
  claims: StepUpClaims;
  record: StepUpsTable;
  /**
   * Marks the step-up used and records the token's jti; run it in the transaction that
   * creates the code. False: someone else did (nothing written). Throws `replayed` when the
   * jti was used by another step-up (roll back).
   */
  finish(tx: PcTx): Promise<boolean>;
}

/** The longest a gateway token can live (DESIGN.md §1), so a record outlives any token it can get. */
const MAX_TOKEN_TTL_SECONDS = 300;

function tokenAad(stepupId: string): string {
  return `pc_stepups.token_sealed:${stepupId}`;
}

export class StepUpGate {
  readonly #d: StepUpGateDeps;

  constructor(deps: StepUpGateDeps) {
    this.#d = deps;
  }

  challenge(action: StepUpAction, body?: Record<string, unknown>): StepUpChallenge {
    return { acrValues: this.#d.requiredAcr[action], maxAgeSeconds: this.#d.maxAuthAgeSeconds, ...(body === undefined ? {} : { body }) };
  }

  #refuse(code: PaymentCodeErrorCode, action: StepUpAction, options: { detail?: string; field?: string; retryAfterSeconds?: number; body?: Record<string, unknown> } = {}): PaymentCodeError {
    const { body, ...rest } = options;
    return new PaymentCodeError(code, { ...rest, challenge: this.challenge(action, body) });
  }

  /** Starts a step-up at the gateway and always throws the 401 that carries it. */
  async begin(input: BeginStepUp): Promise<never> {
    const created = await this.#d.gateway.createStepUp(
      {
        subject: input.subject,
        action: input.action,
        context: input.context,
        bindingMessage: input.bindingMessage,
        ...(input.redirectUri === undefined ? {} : { redirectUri: input.redirectUri }),
        ...(input.state === undefined ? {} : { state: input.state }),
      },
      input.pointerMap,
    );
    const nowMs = this.#d.clock.now().getTime();
    await this.#d.db.transaction().execute(async (tx) => {
      await tx
        .insertInto('pc_stepups')
        .values({
          id: created.stepupId,
          owner: input.owner,
          action: input.action,
          subject: input.subject,
          context: canonicalJson(input.context),
          status: 'pending',
          token_sealed: null,
          failure: null,
          created_at: nowMs,
          expires_at: nowMs + (created.expiresIn + MAX_TOKEN_TTL_SECONDS) * 1000,
          finished_at: null,
        })
        .execute();
      await this.#d.events.append(tx, {
        type: 'stepup.requested',
        actor: input.owner,
        subject: input.subject,
        requestId: input.requestId ?? null,
        data: { stepupId: created.stepupId, action: input.action, acr: created.acr },
      });
    });
    throw this.#refuse('step_up_required', input.action, {
      body: {
        stepup_id: created.stepupId,
        user_url: created.userUrl,
        ticket: created.ticket,
        expires_in: created.expiresIn,
        interval: created.interval,
        acr: created.acr,
        options: created.options,
      },
    });
  }

  async #load(id: string): Promise<StepUpsTable | undefined> {
    return this.#d.db.selectFrom('pc_stepups').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async #fail(record: StepUpsTable, reason: string): Promise<void> {
    const nowMs = this.#d.clock.now().getTime();
    await this.#d.db.transaction().execute(async (tx) => {
      const moved = await tx
        .updateTable('pc_stepups')
        .set({ status: 'failed', failure: reason, token_sealed: null, finished_at: nowMs })
        .where('id', '=', record.id)
        .where('status', 'in', ['pending', 'token_received'])
        .executeTakeFirst();
      if (Number(moved.numUpdatedRows) === 1) {
        await this.#d.events.append(tx, { type: 'stepup.failed', actor: record.owner, subject: record.subject, data: { stepupId: record.id, action: record.action, reason } });
      }
    });
  }

  /** Fetches the token from the gateway if we do not hold it yet. */
  async #token(record: StepUpsTable): Promise<string> {
    if (record.token_sealed !== null) return this.#d.sealer.unseal(record.token_sealed, tokenAad(record.id)).toString('utf8');
    const polled = await timed(this.#d.observe, 'gateway_token', () => this.#d.gateway.pollToken(record.id));
    if (polled.status === 'pending') {
      throw this.#refuse('step_up_pending', record.action, { retryAfterSeconds: polled.retryAfterSeconds, detail: `The user has not completed step-up ${record.id} yet.`, body: { stepup_id: record.id } });
    }
    if (polled.status === 'failed') {
      if (polled.code === 'invalid_grant') {
        // The gateway handed the token out already — to us: a concurrent request with the same
        // stepup_id collected it and is storing it right now. Give it a moment.
        for (let i = 0; i < 20; i++) {
          const fresh = await this.#load(record.id);
          if (fresh?.token_sealed !== null && fresh?.token_sealed !== undefined) return this.#token(fresh);
          if (fresh?.status === 'used') throw this.#refuse('step_up_used', record.action);
          if (fresh?.status === 'failed') throw this.#refuse('step_up_failed', record.action);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      await this.#fail(record, polled.code);
      throw this.#refuse('step_up_failed', record.action, { detail: `The gateway answered ${polled.code}: start a new step-up.` });
    }
    const sealed = this.#d.sealer.seal(polled.token, tokenAad(record.id));
    const stored = await this.#d.db
      .updateTable('pc_stepups')
      .set({ token_sealed: sealed, status: 'token_received' })
      .where('id', '=', record.id)
      .where('status', '=', 'pending')
      .where('token_sealed', 'is', null)
      .executeTakeFirst();
    if (Number(stored.numUpdatedRows) !== 1) {
      const fresh = await this.#load(record.id);
      if (fresh?.status === 'used') throw this.#refuse('step_up_used', record.action);
      if (fresh?.status === 'failed') throw this.#refuse('step_up_failed', record.action);
    }
    return polled.token;
  }

  async complete(input: CompleteStepUp): Promise<VerifiedStepUp> {
    const record = await this.#load(input.stepupId);
    // Unknown, someone else's, or another action: the same answer, so ids cannot be probed.
    if (record === undefined || record.owner !== input.owner || record.action !== input.action) {
      throw this.#refuse('step_up_unknown', input.action);
    }
    if (record.status === 'used') throw this.#refuse('step_up_used', input.action);
    if (record.status === 'failed') throw this.#refuse('step_up_failed', input.action, { detail: `This step-up ended (${record.failure ?? 'failed'}): start a new one.` });
    if (record.expires_at <= this.#d.clock.now().getTime()) {
      await this.#fail(record, 'expired');
      throw this.#refuse('step_up_failed', input.action, { detail: 'This step-up expired: start a new one.' });
    }
    if (record.subject !== input.subject) throw this.#refuse('subject_mismatch', input.action, { field: 'subject' });

    const token = await this.#token(record);
    // The verifier consumes the jti as its very last step; P records it later, in the
    // transaction that issues (see finish), and checks here that it is not recorded yet.
    let accepted: { jti: string; expiresAt: Date } | undefined;
    const replayStore: ReplayStore = {
      consume: async (jti, expiresAt) => {
        accepted = { jti, expiresAt };
        return true;
      },
    };
    let claims: StepUpClaims;
    try {
      claims = await timed(this.#d.observe, 'token_verification', () => verifyStepUpToken(token, {
        issuer: this.#d.issuer,
        audience: this.#d.gateway.clientId,
        jwks: this.#d.jwks,
        replayStore,
        requiredAcr: this.#d.requiredAcr[input.action],
        expectedSubject: record.subject,
        expectedAction: input.action,
        expectedContext: input.context as JsonObject,
        clock: this.#d.clock,
        clockToleranceSeconds: this.#d.clockToleranceSeconds,
        maxAuthAgeSeconds: this.#d.maxAuthAgeSeconds,
      }));
    } catch (err) {
      if (err instanceof StepUpTokenError) {
        // `reason`, not `code`: the logger redacts every field named code (payment codes).
        this.#d.logger.warn({ stepupId: record.id, reason: err.code, field: err.field }, 'step-up token refused');
        // An expired token can never pass again; a refused context can, with the right request.
        if (err.code === 'token_expired' || err.code === 'auth_too_old') await this.#fail(record, err.code);
        throw this.#refuse(err.code, input.action, err.field === undefined ? {} : { field: err.field });
      }
      if (err instanceof VerifierUnavailableError) {
        this.#d.logger.error({ stepupId: record.id, reason: err.code }, 'step-up verification unavailable');
        throw new PaymentCodeError('service_unavailable', { retryAfterSeconds: 5, detail: 'Step-up verification is temporarily unavailable.' });
      }
      throw err;
    }
    if (accepted === undefined) throw new Error('the verifier accepted a token without consuming its jti');
    const jti = accepted;
    if (await jtiRecorded(this.#d.db, jti.jti)) {
      this.#d.logger.warn({ stepupId: record.id, reason: 'replayed' }, 'step-up token refused');
      throw this.#refuse('replayed', input.action);
    }
    // The gateway handed us the token for this step-up id; a different txn means the channel is broken.
    if (claims.txn !== record.id) throw this.#refuse('step_up_mismatch', input.action, { field: 'txn' });

    const finishedAt = this.#d.clock.now().getTime();
    return {
      claims,
      record,
      finish: async (tx) => {
        const done = await tx
          .updateTable('pc_stepups')
          .set({ status: 'used', token_sealed: null, finished_at: finishedAt })
          .where('id', '=', record.id)
          .where('status', '=', 'token_received')
          .executeTakeFirst();
        if (Number(done.numUpdatedRows) !== 1) return false;
        // Used by another step-up meanwhile (a token handed to two step-ups): undo the above.
        if (!(await recordJti(tx, jti.jti, jti.expiresAt))) throw this.#refuse('replayed', input.action);
        return true;
      },
    };
  }
}

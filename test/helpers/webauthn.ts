import assert from 'node:assert/strict';
import type { TestGateway } from './gateway.ts';
import type { SignedIn } from './session.ts';
import type { FlagBits, RegisterOptions, SoftCredential } from './soft-authenticator.ts';

/** The relying party the WebAuthn integration tests configure (https public URL → RP ID). */
export const RP_ID = 'pay.example.com';
export const ORIGIN = 'https://pay.example.com';

export const WEBAUTHN_TEST_CONFIG = { http: { publicUrl: ORIGIN } };

/** Registers `cred` for the signed-in user through the JSON API; returns the new factor id. */
export async function enrolSoft(tg: TestGateway, s: SignedIn, cred: SoftCredential, label = 'Test key', o: Partial<RegisterOptions> = {}): Promise<string> {
  const begun = await tg.http().post('/v1/me/factors/webauthn/registration').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ label });
  assert.equal(begun.status, 200, begun.text);
  const response = cred.register({ challenge: begun.body.options.challenge, origin: ORIGIN, rpId: RP_ID, ...o });
  const done = await tg.http().post('/v1/me/factors/webauthn').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ factor_id: begun.body.factor_id, credential: response });
  assert.equal(done.status, 201, done.text);
  return done.body.id as string;
}

export interface StepUpHandle {
  stepup_id: string;
  ticket: string;
}

export function ticketed(tg: TestGateway, s: StepUpHandle) {
  return {
    challenge: () => tg.http().post(`/v1/stepup/${s.stepup_id}/challenge`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'webauthn' }),
    verify: (credential: unknown) => tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'webauthn', credential }),
  };
}

/** Starts a challenge and answers it with `cred` (optionally altered); returns the verify response. */
export async function answer(tg: TestGateway, s: StepUpHandle, cred: SoftCredential, o: { origin?: string; rpId?: string; flags?: FlagBits; counter?: number; badSignature?: boolean; userHandle?: string } = {}) {
  const t = ticketed(tg, s);
  const started = await t.challenge();
  assert.equal(started.status, 200, started.text);
  const assertion = cred.assert({ challenge: started.body.options.challenge, origin: o.origin ?? ORIGIN, rpId: o.rpId ?? RP_ID, ...o });
  return { started, assertion, res: await t.verify(assertion) };
}

import type { Gateway } from '../gateway.ts';
import { activeFactorRows, liveChallengeRow } from '../flows/stepup-challenge.ts';
import { maskPhoneNumber } from '../sms/index.ts';
import type { StepUp } from '../stepup/stepup-record.ts';

/** What the step-up page shows for SMS codes: the user's phones (masked) and the code sent, if one is live. */
export interface SmsStepUpView {
  phones: { id: string; destination: string; label: string }[];
  live?: { factorId: string; destination: string; resendInSeconds: number };
}

export async function smsStepUpView(gw: Gateway, stepUp: StepUp): Promise<SmsStepUpView | undefined> {
  if (!gw.factors.has('sms_otp')) return undefined;
  const rows = await activeFactorRows(gw.store.db, stepUp.userId, 'sms_otp');
  const phones = rows.map((r) => {
    const phone = (JSON.parse(r.params) as { phone?: unknown }).phone;
    return { id: r.id, destination: typeof phone === 'string' ? maskPhoneNumber(phone) : '', label: r.label };
  });
  const nowMs = gw.clock.now().getTime();
  const challenge = await liveChallengeRow(gw.store.db, stepUp.id, 'sms_otp');
  const view: SmsStepUpView = { phones };
  const phone = phones.find((p) => p.id === challenge?.factor_id);
  if (challenge !== undefined && challenge.state !== null && challenge.consumed_at === null && challenge.expires_at > nowMs && phone !== undefined) {
    const resendAt = challenge.last_sent_at === 0 ? 0 : challenge.last_sent_at + gw.config.sms.resendCooldownSeconds * 1000;
    view.live = { factorId: phone.id, destination: phone.destination, resendInSeconds: Math.max(0, Math.ceil((resendAt - nowMs) / 1000)) };
  }
  return view;
}

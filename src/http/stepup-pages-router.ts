import { createHmac } from 'node:crypto';
import { type Request, type Response, Router } from 'express';
import type { Gateway } from '../gateway.ts';
import { isAppError } from '../errors/app-error.ts';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { authorizeTicket, remainingSets, verifyStepUpFactor } from '../flows/verify-stepup-factor.ts';
import { stepUpTokenChallenges } from '../flows/hardware-tokens.ts';
import { startStepUpChallenge } from '../flows/stepup-challenge.ts';
import { denyStepUpByUser } from '../flows/stepup-token.ts';
import { effectiveStatus, type StepUp } from '../stepup/stepup-record.ts';
import { createViews, localeOf } from './pages-router.ts';
import { smsErrorText } from './sms-pages-router.ts';
import { smsStepUpView } from './sms-stepup-view.ts';
import { locals } from './request-context.ts';
import { mixedScripts } from '../verifier/display-text.ts';

/**
 * The page at `user_url`. The ticket arrives once in the query string and is moved at once
 * into an HttpOnly cookie scoped to this step-up's path; the browser is redirected to the
 * bare URL so the ticket leaves the address bar, the history and any Referer.
 */

const ID = /^stp_[A-Za-z0-9_-]{10,64}$/;
const TICKET = /^[A-Za-z0-9_-]{16,128}$/;
export const STEPUP_CSRF_FIELD = '_stepup_csrf';

export function stepUpTicketCookieName(gw: Gateway): string {
  return gw.config.mode === 'production' ? '__Secure-stepgate_ticket' : 'stepgate_ticket';
}

export function stepUpCsrf(gw: Gateway, stepUp: StepUp): string {
  return createHmac('sha256', gw.sealer.deriveKey('stepup-page-csrf')).update(`${stepUp.id}.${stepUp.ticketHash}`).digest('base64url');
}

function field(body: unknown, name: string): string | undefined {
  const v = (body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : undefined;
}

export function returnUrl(stepUp: StepUp, outcome: 'completed' | 'denied'): string | undefined {
  if (stepUp.redirectUri === null) return undefined;
  const url = new URL(stepUp.redirectUri);
  url.searchParams.set('stepup_id', stepUp.id);
  if (outcome === 'denied') url.searchParams.set('error', 'access_denied');
  if (stepUp.state !== null) url.searchParams.set('state', stepUp.state);
  return url.toString();
}

/**
 * The page's forms end in a 303 to the client's registered redirect URI, and browsers apply
 * CSP `form-action` to the whole redirect chain (Chromium blocks the form otherwise). Allow
 * exactly that origin — it was checked against the client's registration when the step-up
 * was created — on this page only.
 */
function allowReturnTo(res: Response, stepUp: StepUp): void {
  if (stepUp.redirectUri === null) return;
  const csp = res.getHeader('Content-Security-Policy');
  if (typeof csp !== 'string') return;
  const origin = new URL(stepUp.redirectUri).origin;
  res.setHeader('Content-Security-Policy', csp.replace(/form-action ([^;]*)/, (_m, sources: string) => `form-action ${sources} ${origin}`));
}

export function stepUpPagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);

  function ticketFrom(req: Request): string | undefined {
    const value = (req.cookies as Record<string, unknown> | undefined)?.[stepUpTicketCookieName(gw)];
    return typeof value === 'string' && TICKET.test(value) ? value : undefined;
  }

  async function render(req: Request, res: Response, status: number, stepUp: StepUp, extra: { error?: string; errorText?: string } = {}) {
    allowReturnTo(res, stepUp);
    const now = gw.clock.now();
    const state = effectiveStatus(stepUp, now);
    const remaining = remainingSets(stepUp);
    const needed = [...new Set(remaining.flat())];
    views.render(req, res, status, 'stepup', {
      titleKey: 'stepup.title',
      stepUp: {
        id: stepUp.id,
        action: stepUp.action,
        bindingMessage: stepUp.bindingMessage,
        amount: typeof stepUp.context.amount === 'string' ? stepUp.context.amount : undefined,
        currency: typeof stepUp.context.currency === 'string' ? stepUp.context.currency : undefined,
        payee: typeof stepUp.context.payee === 'string' ? stepUp.context.payee : undefined,
        // A payee mixing Latin, Cyrillic or Greek letters ("pаypal") is shown with a warning and
        // its odd-one-out letters marked: it may imitate another name.
        payeeMixed: typeof stepUp.context.payee === 'string' ? mixedScripts(stepUp.context.payee) : undefined,
        bindingMixed: stepUp.bindingMessage === null ? undefined : mixedScripts(stepUp.bindingMessage, { by: 'word' }),
        expiresAt: stepUp.expiresAt.toISOString(),
        attemptsLeft: Math.max(0, stepUp.maxAttempts - stepUp.attempts),
        proven: stepUp.proven.map((p) => p.type),
        alternatives: stepUp.anyOf,
      },
      state,
      needed,
      returnUrl: state === 'completed' || state === 'token_issued' ? returnUrl(stepUp, 'completed') : state === 'denied' ? returnUrl(stepUp, 'denied') : undefined,
      stepupCsrf: stepUpCsrf(gw, stepUp),
      sessionCsrf: locals(res).auth?.csrfToken,
      error: extra.error,
      errorText: extra.errorText,
      sms: needed.includes('sms_otp') && state === 'pending' ? await smsStepUpView(gw, stepUp) : undefined,
      tokenChallenges: needed.includes('hardware_otp') && state === 'pending' ? await stepUpTokenChallenges(gw, stepUp) : [],
    });
  }

  async function load(req: Request, res: Response): Promise<StepUp | undefined> {
    const id = req.params.id;
    try {
      if (typeof id !== 'string' || !ID.test(id)) throw new Error('bad id');
      return await authorizeTicket(gw, id, ticketFrom(req));
    } catch {
      views.render(req, res, 401, 'stepup-invalid', { titleKey: 'stepup.title' });
      return undefined;
    }
  }

  router.get('/stepup/:id', async (req, res) => {
    const id = req.params.id;
    const ticket = req.query.ticket;
    if (typeof ticket === 'string' && ID.test(id) && TICKET.test(ticket)) {
      res.cookie(stepUpTicketCookieName(gw), ticket, {
        httpOnly: true,
        sameSite: 'lax',
        secure: gw.config.mode === 'production',
        path: `/stepup/${id}`,
        maxAge: gw.config.stepup.transactionSeconds * 1000,
      });
      res.setHeader('Cache-Control', 'no-store');
      res.redirect(303, `/stepup/${id}`);
      return;
    }
    const stepUp = await load(req, res);
    if (stepUp !== undefined) await render(req, res, 200, stepUp);
  });

  router.post('/stepup/:id/verify', async (req, res) => {
    const stepUp = await load(req, res);
    if (stepUp === undefined) return;
    const presented = field(req.body, STEPUP_CSRF_FIELD) ?? '';
    if (!constantTimeEqual(presented, stepUpCsrf(gw, stepUp))) {
      await render(req, res, 403, stepUp, { error: 'stepup.error.expiredForm' });
      return;
    }
    const factor = field(req.body, 'factor') ?? '';
    const input = factor === 'password' ? { password: field(req.body, 'password') ?? '' } : { code: field(req.body, 'code') ?? '' };
    if ((factor === 'password' && input.password === '') || (factor !== 'password' && input.code === '')) {
      await render(req, res, 400, stepUp, { error: 'stepup.error.missing' });
      return;
    }
    try {
      const result = await verifyStepUpFactor(gw, stepUp, { factor: factor as never, input }, { ip: req.ip ?? null, requestId: locals(res).requestId });
      const target = result.completed ? returnUrl(result.stepUp, 'completed') : undefined;
      if (target !== undefined) {
        res.redirect(303, target);
        return;
      }
      res.redirect(303, `/stepup/${stepUp.id}`);
    } catch (err) {
      if (!isAppError(err)) throw err;
      const fresh = (await authorizeTicket(gw, stepUp.id, ticketFrom(req)).catch(() => undefined)) ?? stepUp;
      const key =
        err.code === 'factor_invalid' ? 'stepup.error.invalid'
        : err.code === 'factor_locked' ? 'stepup.error.locked'
        : err.code === 'attempts_exhausted' ? 'stepup.error.exhausted'
        : err.code === 'stepup_expired' ? 'stepup.error.expired'
        : err.code === 'stepup_not_pending' ? 'stepup.error.notPending'
        : err.code === 'challenge_required' ? 'sms.error.expired'
        : err.code === 'challenge_attempts_exhausted' ? 'sms.error.exhausted'
        : err.code === 'overloaded' ? 'stepup.error.busy'
        : 'stepup.error.notAllowed';
      if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds)));
      await render(req, res, err.status, fresh, { error: key });
    }
  });

  // Challenge factors on the page: send (or resend) the SMS code, then the verify form takes it.
  router.post('/stepup/:id/challenge', async (req, res) => {
    const stepUp = await load(req, res);
    if (stepUp === undefined) return;
    if (!constantTimeEqual(field(req.body, STEPUP_CSRF_FIELD) ?? '', stepUpCsrf(gw, stepUp))) {
      await render(req, res, 403, stepUp, { error: 'stepup.error.expiredForm' });
      return;
    }
    const factorId = field(req.body, 'factorId');
    try {
      await startStepUpChallenge(
        gw,
        stepUp,
        { factor: 'sms_otp', ...(factorId === undefined || factorId === '' ? {} : { factorId: factorId.slice(0, 64) }), locale: localeOf(req) },
        { ip: req.ip ?? null, requestId: locals(res).requestId },
      );
      res.redirect(303, `/stepup/${stepUp.id}`);
    } catch (err) {
      if (!isAppError(err) || (err.status >= 500 && err.status !== 503)) throw err;
      if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds)));
      const fresh = (await authorizeTicket(gw, stepUp.id, ticketFrom(req)).catch(() => undefined)) ?? stepUp;
      await render(req, res, err.status, fresh, { errorText: smsErrorText(req, err) });
    }
  });

  router.post('/stepup/:id/deny', async (req, res) => {
    const stepUp = await load(req, res);
    if (stepUp === undefined) return;
    if (!constantTimeEqual(field(req.body, STEPUP_CSRF_FIELD) ?? '', stepUpCsrf(gw, stepUp))) {
      await render(req, res, 403, stepUp, { error: 'stepup.error.expiredForm' });
      return;
    }
    if (!(await denyStepUpByUser(gw, stepUp, { ip: req.ip ?? null, requestId: locals(res).requestId }))) {
      // Completed (from the app, another tab) or over meanwhile: telling the relying service
      // "access_denied" would contradict a token it can still collect.
      const fresh = (await authorizeTicket(gw, stepUp.id, ticketFrom(req)).catch(() => undefined)) ?? stepUp;
      await render(req, res, effectiveStatus(fresh, gw.clock.now()) === 'expired' ? 410 : 409, fresh, { error: effectiveStatus(fresh, gw.clock.now()) === 'expired' ? 'stepup.error.expired' : 'stepup.error.notPending' });
      return;
    }
    const target = returnUrl(stepUp, 'denied');
    if (target !== undefined) {
      res.redirect(303, target);
      return;
    }
    res.redirect(303, `/stepup/${stepUp.id}`);
  });

  return router;
}

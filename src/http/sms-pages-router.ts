import { type Request, type Response, Router } from 'express';
import type { Gateway } from '../gateway.ts';
import { type AppError, isAppError } from '../errors/app-error.ts';
import { pendingFactor } from '../flows/factors.ts';
import { confirmSmsEnrolment, resendSmsEnrolmentCode, smsEnrolmentAvailable, startSmsEnrolment } from '../flows/sms-enrolment.ts';
import { configuredSmsProvider, maskPhoneNumber } from '../sms/index.ts';
import { factorIdOf } from './me-factors-router.ts';
import { createViews, localeOf, translator } from './pages-router.ts';
import { locals } from './request-context.ts';
import { factorChangeDetour } from './session-confirm-router.ts';
import { SECURITY_PATH } from './security-pages-router.ts';

/**
 * Pages for SMS codes: adding a phone from "my security" (form → code → confirm, resend
 * with cooldown) and, in development with the outbox provider only, /dev/outbox showing what
 * would have been texted.
 */

function field(body: unknown, name: string): string | undefined {
  const v = (body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : undefined;
}

/** The message for an error from the SMS flows, in the page's language. */
export function smsErrorText(req: Request, err: AppError): string {
  const t = translator(localeOf(req));
  const seconds = Math.max(1, Math.ceil(err.retryAfterSeconds ?? 60));
  switch (err.code) {
    case 'phone_invalid':
      return t('sms.error.phoneInvalid');
    case 'sms_region_not_allowed':
      return t('sms.error.region');
    case 'sms_limit_exceeded':
      return t('sms.error.limit', { minutes: Math.max(1, Math.ceil(seconds / 60)) });
    case 'sms_unavailable':
    case 'service_unavailable':
      return t('sms.error.unavailable');
    case 'challenge_cooldown':
      return t('sms.error.cooldown', { seconds });
    case 'challenge_attempts_exhausted':
      return t('sms.error.exhausted');
    case 'challenge_required':
      return t('sms.error.expired');
    case 'factor_invalid':
      return t('sms.error.invalid');
    case 'conflict':
      return err.invalidParams?.some((p) => p.pointer === '/phone') === true ? t('sms.error.duplicate') : t('sms.error.generic');
    default:
      return t('sms.error.generic');
  }
}

export function smsPagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);
  const base = `${SECURITY_PATH}/sms_otp`;

  /** The session of a page request, or a redirect to sign in (again) and undefined. */
  async function signedIn(req: Request, res: Response, needFresh: boolean) {
    const auth = locals(res).auth;
    if (auth === undefined) {
      res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
      return undefined;
    }
    const detour = needFresh ? await factorChangeDetour(gw, auth, req.method === 'GET' ? req.originalUrl : SECURITY_PATH) : undefined;
    if (detour !== undefined) {
      res.redirect(303, detour);
      return undefined;
    }
    return auth;
  }

  function who(req: Request, res: Response, userId: string) {
    return { actor: userId, ip: req.ip ?? null, requestId: locals(res).requestId };
  }

  async function renderConfirm(req: Request, res: Response, status: number, factorId: string, extra: { error?: string; notice?: string } = {}) {
    const auth = locals(res).auth;
    if (auth === undefined) return;
    const factor = await pendingFactor(gw, gw.store.db, auth.userId, factorId, 'sms_otp');
    const code = await gw.store.db.selectFrom('sms_enrolment_codes').selectAll().where('factor_id', '=', factorId).executeTakeFirst();
    const phone = (JSON.parse(factor.params) as { phone?: string }).phone ?? '';
    const nowMs = gw.clock.now().getTime();
    const resendAt = code === undefined || code.last_sent_at === 0 ? 0 : code.last_sent_at + gw.config.sms.resendCooldownSeconds * 1000;
    views.render(req, res, status, 'sms-confirm', {
      titleKey: 'sms.confirmTitle',
      factorId,
      destination: maskPhoneNumber(phone),
      minutes: Math.max(1, Math.round(gw.config.sms.codeTtlSeconds / 60)),
      resendInSeconds: Math.max(0, Math.ceil((resendAt - nowMs) / 1000)),
      csrf: auth.csrfToken,
      error: extra.error,
      notice: extra.notice,
    });
  }

  router.post(`${base}/enrol`, async (req, res) => {
    const auth = await signedIn(req, res, true);
    if (auth === undefined) return;
    const phone = (field(req.body, 'phone') ?? '').slice(0, 32);
    const label = (field(req.body, 'label') ?? '').slice(0, 64);
    try {
      const started = await startSmsEnrolment(gw, auth.userId, { phone, label }, localeOf(req), who(req, res, auth.userId));
      res.redirect(303, `${base}/${started.factorId}`);
    } catch (err) {
      if (!isAppError(err) || (err.status >= 500 && err.code !== 'sms_unavailable')) throw err;
      if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds)));
      views.render(req, res, err.status, 'sms-enrol', { titleKey: 'sms.enrolTitle', csrf: auth.csrfToken, fresh: true, phone, label, error: smsErrorText(req, err) });
    }
  });

  router.get(`${base}/:id`, async (req, res) => {
    const auth = await signedIn(req, res, true);
    if (auth === undefined) return;
    try {
      await renderConfirm(req, res, 200, factorIdOf(req), { notice: req.query.notice === 'resent' ? translator(localeOf(req))('sms.resent') : undefined });
    } catch (err) {
      if (isAppError(err) && err.code === 'not_found') {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      throw err;
    }
  });

  router.post(`${base}/:id/resend`, async (req, res) => {
    const auth = await signedIn(req, res, true);
    if (auth === undefined) return;
    const factorId = factorIdOf(req);
    try {
      await resendSmsEnrolmentCode(gw, auth.userId, factorId, localeOf(req), who(req, res, auth.userId));
      res.redirect(303, `${base}/${factorId}?notice=resent`);
    } catch (err) {
      if (!isAppError(err) || (err.status >= 500 && err.code !== 'sms_unavailable')) throw err;
      if (err.code === 'not_found') {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds)));
      await renderConfirm(req, res, err.status, factorId, { error: smsErrorText(req, err) });
    }
  });

  router.post(`${base}/:id/confirm`, async (req, res) => {
    const auth = await signedIn(req, res, true);
    if (auth === undefined) return;
    const factorId = factorIdOf(req);
    try {
      await confirmSmsEnrolment(gw, auth.userId, factorId, (field(req.body, 'code') ?? '').slice(0, 64), who(req, res, auth.userId));
      res.redirect(303, `${SECURITY_PATH}?notice=enrolled`);
    } catch (err) {
      if (!isAppError(err) || err.status >= 500) throw err;
      if (err.code === 'not_found') {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      await renderConfirm(req, res, err.status, factorId, { error: smsErrorText(req, err) });
    }
  });

  // What the outbox "sent": development only, and only when the outbox is the provider.
  if (gw.config.mode === 'development' && configuredSmsProvider(gw.config) === 'outbox' && smsEnrolmentAvailable(gw)) {
    router.get('/dev/outbox', async (req, res) => {
      const rows = await gw.store.db.selectFrom('sms_outbox').selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(50).execute();
      views.render(req, res, 200, 'dev-outbox', {
        titleKey: 'sms.outbox.title',
        messages: rows.map((r) => ({ id: r.id, at: new Date(r.created_at).toISOString().replace('T', ' ').slice(0, 19), to: r.to_number, purpose: r.purpose, text: r.text })),
      });
    });
  }

  return router;
}

import { type NextFunction, type Request, type Response, Router } from 'express';
import { AppError, isAppError } from '../errors/app-error.ts';
import { activitySummary } from '../flows/console-dashboard.ts';
import { completeSessionSecondFactor, consoleSecondFactors, sessionHasSecondFactor } from '../flows/console-session.ts';
import { passkeyLoginOffered } from '../flows/webauthn.ts';
import type { Gateway } from '../gateway.ts';
import { normaliseOtpInput } from '../otp/code-input.ts';
import { barChart } from './console-chart.ts';
import { consoleAuditPages } from './console-audit-pages.ts';
import { consoleClientsPages } from './console-clients-pages.ts';
import { consolePoliciesPages } from './console-policies-pages.ts';
import { consoleTokensPages } from './console-tokens-pages.ts';
import { consoleUsersPages } from './console-users-pages.ts';
import { CONSOLE_PATH, type FormError, formErrorOf, formField, queryField, renderConsole } from './console-support.ts';
import { createViews, isStaff, safeNext, type Views } from './pages-router.ts';
import { locals } from './request-context.ts';
import { setSessionCookie } from './session.ts';

/**
 * The admin console (`/console/*`): server-rendered pages over the same flows as the admin
 * JSON API. The gate, in order:
 *  1. a session (otherwise the sign-in page, coming back here);
 *  2. a staff role — admin, helpdesk or auditor (otherwise 403);
 *  3. a session completed with a second factor (src/flows/console-session.ts): otherwise
 *     the second-factor page, or the security page to enrol one when the operator has none;
 *  4. per page and per action the roles of the matching JSON route (requireRole).
 * State changes are urlencoded forms carrying the session's CSRF token (checked globally
 * before any router runs); the token-file upload is multipart and sends it in the query.
 */

const VERIFY_PATH = `${CONSOLE_PATH}/verify`;

function consoleGate(gw: Gateway) {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const auth = locals(res).auth;
    if (auth === undefined) {
      if (req.method === 'GET') {
        res.redirect(303, `/login?next=${encodeURIComponent(safeNext(req.originalUrl, gw.config.http.publicUrl) ?? CONSOLE_PATH)}`);
        return;
      }
      throw new AppError('unauthorized', { detail: 'Sign in first.' });
    }
    if (!isStaff(auth.roles)) throw new AppError('forbidden', { detail: 'The console is for administrators, helpdesk and auditors.' });
    if (`${req.baseUrl}${req.path}` === VERIFY_PATH || sessionHasSecondFactor(auth.amr)) {
      next();
      return;
    }
    if (req.method !== 'GET') throw new AppError('second_factor_required', { detail: 'Complete your sign-in with a second factor first.' });
    const back = safeNext(req.originalUrl, gw.config.http.publicUrl) ?? CONSOLE_PATH;
    res.redirect(303, (await secondFactorOptions(gw, auth.userId)).none ? '/security?notice=consoleEnrol' : `${VERIFY_PATH}?next=${encodeURIComponent(back)}`);
  };
}

/** How this staff user can complete a session: a code form, a passkey sign-in, or neither (enrol first). */
async function secondFactorOptions(gw: Gateway, userId: string) {
  const { choices, passkeys } = await consoleSecondFactors(gw, userId);
  const passkey = passkeys > 0 && passkeyLoginOffered(gw);
  return { choices, passkey, none: choices.length === 0 && !passkey };
}

/** The console's own error page for a refused page or action (HTML, not problem+json). */
function consoleErrors(views: Views) {
  return (err: unknown, req: Request, res: Response, next: NextFunction): void => {
    if (!isAppError(err) || res.headersSent || !['forbidden', 'not_found', 'second_factor_required', 'token_not_found'].includes(err.code)) {
      next(err);
      return;
    }
    const e = formErrorOf(req, 'page', err);
    const auth = locals(res).auth;
    if (auth === undefined) {
      next(err);
      return;
    }
    renderConsole(views, req, res, err.status, 'console/error', { titleKey: 'console.error.title', error: e });
  };
}

export function consoleRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);
  router.use(CONSOLE_PATH, consoleGate(gw));

  async function renderVerify(req: Request, res: Response, formError?: FormError): Promise<void> {
    const auth = locals(res).auth;
    if (auth === undefined) return;
    const { choices, passkey, none } = await secondFactorOptions(gw, auth.userId);
    if (none) {
      res.redirect(303, '/security?notice=consoleEnrol');
      return;
    }
    views.render(req, res, formError?.status ?? 200, 'console/verify', {
      titleKey: 'console.verify.title',
      choices,
      passkey,
      next: safeNext(formField(req, 'next') || queryField(req, 'next'), gw.config.http.publicUrl) ?? CONSOLE_PATH,
      csrf: auth.csrfToken,
      formError,
    });
  }

  router.get(VERIFY_PATH, async (req, res) => {
    const auth = locals(res).auth;
    if (auth !== undefined && sessionHasSecondFactor(auth.amr)) {
      res.redirect(303, safeNext(queryField(req, 'next'), gw.config.http.publicUrl) ?? CONSOLE_PATH);
      return;
    }
    await renderVerify(req, res);
  });

  router.post(VERIFY_PATH, async (req, res) => {
    const auth = locals(res).auth;
    if (auth === undefined) throw new AppError('unauthorized');
    const next = safeNext(formField(req, 'next'), gw.config.http.publicUrl) ?? CONSOLE_PATH;
    try {
      const { choices } = await consoleSecondFactors(gw, auth.userId);
      const factorId = formField(req, 'factorId');
      const chosen = choices.find((c) => c.id === factorId) ?? (factorId === '' && choices.length === 1 ? choices[0] : undefined);
      if (chosen === undefined) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/factorId', reason: 'console.invalid.factorChoice' }] });
      const code = normaliseOtpInput(formField(req, 'code'));
      if (!/^\d{6,10}$/.test(code)) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/code', reason: 'console.invalid.verifyCode' }] });
      const session = await completeSessionSecondFactor(gw, { idHash: auth.sessionIdHash, userId: auth.userId, amr: auth.amr }, { factor: chosen.type, factorId: chosen.id, code }, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      setSessionCookie(res, gw.config, session.sessionId);
      res.redirect(303, next);
    } catch (err) {
      if (!isAppError(err) || err.code === 'unauthorized') throw err;
      await renderVerify(req, res, formErrorOf(req, 'verify', err));
    }
  });

  router.get(CONSOLE_PATH, async (req, res) => {
    const summary = await activitySummary(gw, 14);
    renderConsole(views, req, res, 200, 'console/dashboard', { titleKey: 'console.dashboard.title', summary, chart: barChart(summary.days) });
  });

  router.use(consoleUsersPages(gw, views));
  router.use(consoleTokensPages(gw, views));
  router.use(consolePoliciesPages(gw, views));
  router.use(consoleClientsPages(gw, views));
  router.use(consoleAuditPages(gw, views));
  router.use(CONSOLE_PATH, consoleErrors(views));
  return router;
}

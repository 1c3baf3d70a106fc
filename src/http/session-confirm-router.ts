import { type Request, type Response, Router } from 'express';
import { z } from 'zod';
import { AppError, isAppError } from '../errors/app-error.ts';
import { CONFIRM_PATH, CONFIRMED_PATH, finishConfirmation, secondFactorTypes, startConfirmation } from '../flows/session-confirm.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, isFreshLogin, requireSession } from './authorize.ts';
import { createViews, localeOf, translator } from './pages-router.ts';
import { type AuthContext, locals } from './request-context.ts';
import { reauthUrl, SECURITY_PATH } from './security-pages-router.ts';
import { setSessionCookie } from './session.ts';

/**
 * "Confirm it's you" (flows/session-confirm.ts): the page a user is sent to before changing
 * factors with a password-only session, and the same as JSON for native apps.
 *
 *   GET  /security/confirm    explains, one button (POST, CSRF)
 *   POST /security/confirm    opens the self step-up, 303 to its page (every factor works there)
 *   GET  /security/confirmed  the step-up page's return: consume it, new session cookie, 303 /security
 *
 *   POST /v1/me/session/confirmation                → {stepup_id, ticket, user_url, …}; complete it
 *        with the step-up JSON API (Authorization: Ticket …), then
 *   POST /v1/me/session/confirmation/{id}/complete  → new session cookie and CSRF token
 */
const STEPUP_ID = z.string().regex(/^stp_[A-Za-z0-9_-]{10,64}$/);

function whoOf(req: Request, res: Response, auth: AuthContext) {
  return { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId };
}

function sessionOf(auth: AuthContext) {
  return { idHash: auth.sessionIdHash, userId: auth.userId, amr: auth.amr, device: auth.device };
}

/** Where a factor-changing page sends this session first, if anywhere: sign in again, or confirm. */
export async function factorChangeDetour(gw: Gateway, auth: AuthContext, next = SECURITY_PATH): Promise<string | undefined> {
  if (!isFreshLogin(gw, auth)) return reauthUrl(next);
  if (await auth.needsConfirmation()) return CONFIRM_PATH;
  return undefined;
}

export function sessionConfirmRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const views = createViews(gw);

  function signIn(res: Response): void {
    res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
  }

  router.get(CONFIRM_PATH, async (req, res) => {
    const auth = locals(res).auth;
    if (auth === undefined) return signIn(res);
    if (!(await auth.needsConfirmation())) {
      res.redirect(303, SECURITY_PATH);
      return;
    }
    const types = await secondFactorTypes(gw, auth.userId);
    const t = translator(localeOf(req));
    views.render(req, res, 200, 'security-confirm', { titleKey: 'confirm.title', csrf: auth.csrfToken, factorNames: types.map((type) => t(`factor.${type}`)) });
  });

  router.post(CONFIRM_PATH, async (req, res) => {
    const auth = locals(res).auth;
    if (auth === undefined) return signIn(res);
    if (!(await auth.needsConfirmation())) {
      res.redirect(303, SECURITY_PATH);
      return;
    }
    const started = await startConfirmation(gw, sessionOf(auth), translator(localeOf(req))('confirm.binding'), whoOf(req, res, auth));
    res.redirect(303, started.userUrl);
  });

  router.get(CONFIRMED_PATH, async (req, res) => {
    const auth = locals(res).auth;
    if (auth === undefined) return signIn(res);
    if (req.query.error === 'access_denied') {
      res.redirect(303, `${SECURITY_PATH}?notice=confirmCancelled`);
      return;
    }
    const id = STEPUP_ID.safeParse(req.query.stepup_id);
    const state = typeof req.query.state === 'string' && req.query.state.length <= 128 ? req.query.state : '';
    try {
      if (!id.success) throw new AppError('confirmation_invalid');
      const next = await finishConfirmation(gw, sessionOf(auth), id.data, state, whoOf(req, res, auth));
      setSessionCookie(res, gw.config, next.sessionId);
      res.redirect(303, `${SECURITY_PATH}?notice=confirmed`);
    } catch (err) {
      if (!isAppError(err) || err.code !== 'confirmation_invalid') throw err;
      res.redirect(303, `${SECURITY_PATH}?notice=confirmFailed`);
    }
  });

  api.route(router, {
    method: 'post', path: '/v1/me/session/confirmation', tag: 'my factors', security: ['session'],
    summary: 'Open a "confirm it\'s you" step-up for this session: needed before changing factors (and before the admin API) once the user has a factor besides the password. Complete it with the step-up JSON API and the ticket, then call …/complete.',
    responses: {
      201: {
        description: 'The step-up to complete (any one of the listed factors).',
        schema: z.object({ stepup_id: z.string(), ticket: z.string(), user_url: z.string(), expires_in: z.number().int(), options: z.array(z.array(z.string())) }),
      },
      400: { description: 'validation_failed: the user has no factor besides the password' },
      401: { description: 'unauthorized (no session)' },
      403: { description: 'csrf_failed' },
    },
  }, [requireSession], async (req, res) => {
    const auth = authOf(res);
    const started = await startConfirmation(gw, sessionOf(auth), translator(localeOf(req))('confirm.binding'), whoOf(req, res, auth));
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json({ stepup_id: started.stepupId, ticket: started.ticket, user_url: started.userUrl, expires_in: started.expiresIn, options: started.options });
  });

  api.route(router, {
    method: 'post', path: '/v1/me/session/confirmation/:id/complete', tag: 'my factors', security: ['session'],
    summary: 'Finish a completed confirmation of this session: the session is replaced (new cookie, new CSRF token) by one that may change factors. Once only.',
    responses: {
      200: { description: 'The new session.', schema: z.object({ csrf_token: z.string(), expires_at: z.string(), amr: z.array(z.string()) }) },
      400: { description: 'confirmation_invalid: unknown, another session\'s, not completed, expired or already used' },
      401: { description: 'unauthorized (no session)' },
      403: { description: 'csrf_failed' },
    },
  }, [requireSession], async (req, res) => {
    const auth = authOf(res);
    const id = STEPUP_ID.safeParse(req.params.id);
    if (!id.success) throw new AppError('confirmation_invalid');
    const next = await finishConfirmation(gw, sessionOf(auth), id.data, undefined, whoOf(req, res, auth));
    setSessionCookie(res, gw.config, next.sessionId);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ csrf_token: next.csrfToken, expires_at: next.expiresAt.toISOString(), amr: next.amr });
  });

  return router;
}

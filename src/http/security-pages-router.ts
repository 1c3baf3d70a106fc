import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Request, type Response, Router } from 'express';
import type { Gateway } from '../gateway.ts';
import { isAppError } from '../errors/app-error.ts';
import { listUserFactors, removeFactor, renameFactor } from '../flows/factors.ts';
import { getUser } from '../flows/users.ts';
import { CONFIRM_PATH } from '../flows/session-confirm.ts';
import { factorIdOf } from './me-factors-router.ts';
import { createViews } from './pages-router.ts';
import { locals } from './request-context.ts';
import { factorChangeDetour } from './session-confirm-router.ts';

/**
 * "My security": the signed-in user's factors, with enrolment sections contributed by each
 * factor type as a partial `views/security/<type>.eta` (shown when the type is registered).
 * A section gets `it.factors` (the user's factors of its type), `it.csrf`, `it.fresh` and
 * `it.t`; its forms post to the type's own routes.
 */

const VIEWS_DIR = fileURLToPath(new URL('../../views/', import.meta.url));

/** The order sections appear in on the page. */
export const SECURITY_SECTION_ORDER = ['webauthn', 'totp', 'sms_otp', 'hardware_otp', 'recovery_code'] as const;

/** Notices a redirect may ask the page to show (anything else is ignored). */
const NOTICES = new Set(['removed', 'renamed', 'enrolled', 'reauth', 'error', 'hwResynced', 'hwLost', 'hwBindFailed', 'hwResyncFailed', 'hwThrottled', 'consoleEnrol', 'confirmed', 'confirmCancelled', 'confirmFailed', 'passwordChanged']);

export const SECURITY_PATH = '/security';

/** Where a page sends a user whose sign-in is not fresh enough: sign in again, then come back. */
export function reauthUrl(next = SECURITY_PATH): string {
  return `/login?reauth=1&next=${encodeURIComponent(next)}`;
}

export function securityPagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);
  const sections = SECURITY_SECTION_ORDER.filter((type) => existsSync(`${VIEWS_DIR}security/${type}.eta`));

  router.get(SECURITY_PATH, async (req: Request, res: Response) => {
    const auth = locals(res).auth;
    if (auth === undefined) {
      res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
      return;
    }
    const [user, factors] = await Promise.all([getUser(gw, auth.userId), listUserFactors(gw, auth.userId)]);
    const notice = typeof req.query.notice === 'string' && NOTICES.has(req.query.notice) ? req.query.notice : undefined;
    // `fresh`: factors may be changed now; otherwise reauthUrl says how (sign in again, or confirm).
    const detour = await factorChangeDetour(gw, auth);
    views.render(req, res, 200, 'security', {
      titleKey: 'security.title',
      user: { username: auth.username, displayName: user?.displayName ?? auth.username },
      factors,
      sections: sections.filter((type) => gw.factors.has(type)).map((type) => ({ type, partial: `./security/${type}`, factors: factors.filter((f) => f.type === type) })),
      csrf: auth.csrfToken,
      fresh: detour === undefined,
      confirmNeeded: detour === CONFIRM_PATH,
      freshMinutes: Math.max(1, Math.round(gw.config.session.freshSeconds / 60)),
      reauthUrl: detour ?? reauthUrl(),
      notice,
    });
  });

  router.post(`${SECURITY_PATH}/factors/:id/remove`, async (req: Request, res: Response) => {
    const auth = locals(res).auth;
    if (auth === undefined) {
      res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
      return;
    }
    const detour = await factorChangeDetour(gw, auth);
    if (detour !== undefined) {
      res.redirect(303, detour);
      return;
    }
    try {
      await removeFactor(gw, auth.userId, factorIdOf(req), { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      res.redirect(303, `${SECURITY_PATH}?notice=removed`);
    } catch (err) {
      if (isAppError(err) && err.status < 500) {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      throw err;
    }
  });

  router.post(`${SECURITY_PATH}/factors/:id/rename`, async (req: Request, res: Response) => {
    const auth = locals(res).auth;
    if (auth === undefined) {
      res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
      return;
    }
    const label = (req.body as Record<string, unknown> | undefined)?.label;
    try {
      await renameFactor(gw, auth.userId, factorIdOf(req), typeof label === 'string' ? label : '', { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      res.redirect(303, `${SECURITY_PATH}?notice=renamed`);
    } catch (err) {
      if (isAppError(err) && err.status < 500) {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      throw err;
    }
  });

  return router;
}

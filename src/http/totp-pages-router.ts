import { type Request, type Response, Router } from 'express';
import type { Gateway } from '../gateway.ts';
import { isAppError } from '../errors/app-error.ts';
import { confirmTotpEnrolment, pendingTotpMaterial, startTotpEnrolment, type TotpEnrolmentMaterial } from '../flows/totp-enrolment.ts';
import { getUser } from '../flows/users.ts';
import { factorIdOf } from './me-factors-router.ts';
import { createViews } from './pages-router.ts';
import { locals } from './request-context.ts';
import { factorChangeDetour } from './session-confirm-router.ts';
import { SECURITY_PATH } from './security-pages-router.ts';

/**
 * The "my security" page's authenticator-app forms: start an enrolment (shows the QR code
 * and key on a page of its own, never in a URL), then confirm it with the first code.
 */
export function totpPagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);

  /** The signed-in user with a fresh login, or undefined after redirecting them. */
  async function freshUser(res: Response): Promise<{ userId: string; csrf: string } | undefined> {
    const auth = locals(res).auth;
    if (auth === undefined) {
      res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
      return undefined;
    }
    const detour = await factorChangeDetour(gw, auth);
    if (detour !== undefined) {
      res.redirect(303, detour);
      return undefined;
    }
    return { userId: auth.userId, csrf: auth.csrfToken };
  }

  async function renderEnrolment(req: Request, res: Response, status: number, m: TotpEnrolmentMaterial, user: { userId: string; csrf: string }, error?: string) {
    const account = (await getUser(gw, user.userId))?.username ?? '';
    views.render(req, res, status, 'security/totp-enrol', {
      titleKey: 'totp.enrol.heading',
      factorId: m.factorId,
      params: m.params,
      uri: m.uri,
      qrPng: m.qr.png.toString('base64'),
      // The PNG is drawn at 6 px per module; show it at that size.
      qrWidth: m.qr.png.readUInt32BE(16),
      secretGroups: m.secret.replace(/(.{4})(?=.)/g, '$1 '),
      issuer: gw.config.totp.issuer,
      account,
      csrf: user.csrf,
      minutesLeft: Math.max(1, Math.ceil((m.expiresAt.getTime() - gw.clock.now().getTime()) / 60_000)),
      error,
    });
  }

  router.post(`${SECURITY_PATH}/totp`, async (req: Request, res: Response) => {
    const user = await freshUser(res);
    if (user === undefined) return;
    try {
      const started = await startTotpEnrolment(gw, user.userId, {}, { actor: user.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      await renderEnrolment(req, res, 200, started, user);
    } catch (err) {
      if (isAppError(err) && err.status < 500) {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      throw err;
    }
  });

  router.post(`${SECURITY_PATH}/totp/:id/confirm`, async (req: Request, res: Response) => {
    const user = await freshUser(res);
    if (user === undefined) return;
    const factorId = factorIdOf(req);
    const code = (req.body as Record<string, unknown> | undefined)?.code;
    try {
      await confirmTotpEnrolment(gw, user.userId, factorId, typeof code === 'string' ? code : '', { actor: user.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      res.redirect(303, `${SECURITY_PATH}?notice=enrolled`);
    } catch (err) {
      if (!isAppError(err) || err.status >= 500) throw err;
      if (err.code === 'factor_invalid') {
        const again = await pendingTotpMaterial(gw, user.userId, factorId).catch(() => undefined);
        if (again !== undefined) {
          await renderEnrolment(req, res, 400, again, user, 'totp.error.invalid');
          return;
        }
      }
      res.redirect(303, `${SECURITY_PATH}?notice=error`);
    }
  });

  return router;
}

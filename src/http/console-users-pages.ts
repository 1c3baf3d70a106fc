import { type Request, type Response, Router } from 'express';
import { changeUserStatus, issuePasswordReset, removeUserFactor, resetUserFactors, unlockUser, userDetail } from '../flows/admin-users.ts';
import { listUsers } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { requireRole } from './authorize.ts';
import { CONSOLE_PATH, consoleForm, type FormError, noticeOf, operatorOf, queryField, reasonOf, renderConsole } from './console-support.ts';
import type { Views } from './pages-router.ts';

/**
 * Console: users. Every staff role reads; admin and helpdesk unlock, disable / enable, reset
 * factors, remove one factor and issue a password-reset link — each with a reason, through
 * the same flows (and the same rules about administrators' accounts) as /v1/admin/users.
 */

const PAGE_SIZE = 50;
const NOTICES = ['unlocked', 'disabled', 'enabled', 'factorsReset', 'factorRemoved'] as const;
const manage = requireRole('admin', 'helpdesk');

export function consoleUsersPages(gw: Gateway, views: Views): Router {
  const router = Router();
  const base = `${CONSOLE_PATH}/users`;

  router.get(base, async (req, res) => {
    const query = queryField(req, 'q').slice(0, 128);
    const offset = /^\d{1,6}$/.test(queryField(req, 'offset')) ? Number(queryField(req, 'offset')) : 0;
    const users = await listUsers(gw, { query: query === '' ? undefined : query, limit: PAGE_SIZE + 1, offset });
    renderConsole(views, req, res, 200, 'console/users', {
      titleKey: 'console.users.title',
      query,
      users: users.slice(0, PAGE_SIZE),
      offset,
      next: users.length > PAGE_SIZE ? offset + PAGE_SIZE : undefined,
      prev: offset > 0 ? Math.max(0, offset - PAGE_SIZE) : undefined,
    });
  });

  async function renderUser(req: Request, res: Response, status: number, extra: { formError?: FormError; resetLink?: { url: string; expiresAt: Date } } = {}) {
    const user = await userDetail(gw, String(req.params.id));
    renderConsole(views, req, res, status, 'console/user', {
      titleKey: 'console.users.detailTitle',
      user,
      locked: user.login.lockedUntil !== null && user.login.lockedUntil.getTime() > gw.clock.now().getTime(),
      notice: noticeOf(req, NOTICES),
      ...extra,
    });
  }

  router.get(`${base}/:id`, async (req, res) => {
    await renderUser(req, res, 200);
  });

  const rerender = (req: Request, res: Response, formError: FormError) => renderUser(req, res, formError.status, { formError });
  const done = (res: Response, req: Request, notice: (typeof NOTICES)[number]) => res.redirect(303, `${base}/${encodeURIComponent(String(req.params.id))}?notice=${notice}`);

  router.post(`${base}/:id/unlock`, manage, consoleForm('unlock', async (req, res) => {
    await unlockUser(gw, operatorOf(req, res), String(req.params.id), reasonOf(req));
    done(res, req, 'unlocked');
  }, rerender));

  for (const [action, status] of [['disable', 'disabled'], ['enable', 'active']] as const) {
    router.post(`${base}/:id/${action}`, manage, consoleForm('status', async (req, res) => {
      await changeUserStatus(gw, operatorOf(req, res), String(req.params.id), status, reasonOf(req));
      done(res, req, action === 'disable' ? 'disabled' : 'enabled');
    }, rerender));
  }

  router.post(`${base}/:id/factors/reset`, manage, consoleForm('reset', async (req, res) => {
    await resetUserFactors(gw, operatorOf(req, res), String(req.params.id), reasonOf(req));
    done(res, req, 'factorsReset');
  }, rerender));

  router.post(`${base}/:id/factors/:factorId/remove`, manage, consoleForm('remove', async (req, res) => {
    await removeUserFactor(gw, operatorOf(req, res), String(req.params.id), String(req.params.factorId), reasonOf(req));
    done(res, req, 'factorRemoved');
  }, rerender));

  router.post(`${base}/:id/password-reset`, manage, consoleForm('passwordReset', async (req, res) => {
    const link = await issuePasswordReset(gw, operatorOf(req, res), String(req.params.id), reasonOf(req));
    // Shown this once, on this answer (no-store), never stored or redirected through a URL.
    await renderUser(req, res, 201, { resetLink: link });
  }, rerender));

  return router;
}

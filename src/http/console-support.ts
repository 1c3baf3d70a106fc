import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AppError, isAppError } from '../errors/app-error.ts';
import type { Operator } from '../flows/admin-users.ts';
import type { AuditActor, Role } from '../flows/users.ts';
import { authOf } from './authorize.ts';
import { localeOf, messageCatalogues, translator, type Views } from './pages-router.ts';
import { locals } from './request-context.ts';

/**
 * What every console page shares: the console navigation (only the pages the operator's
 * roles may open), the rendering of a form's failure next to that form (status, message,
 * the fields at fault) and the operator for the flows' audit records.
 */

export const CONSOLE_PATH = '/console';

const ALL_STAFF: readonly Role[] = ['admin', 'helpdesk', 'auditor'];

/** The console's pages and who may open them (the same roles as the JSON API behind each). */
export const CONSOLE_PAGES: readonly { href: string; key: string; roles: readonly Role[] }[] = [
  { href: CONSOLE_PATH, key: 'console.nav.dashboard', roles: ALL_STAFF },
  { href: `${CONSOLE_PATH}/users`, key: 'console.nav.users', roles: ALL_STAFF },
  { href: `${CONSOLE_PATH}/tokens`, key: 'console.nav.tokens', roles: ALL_STAFF },
  { href: `${CONSOLE_PATH}/policies`, key: 'console.nav.policies', roles: ALL_STAFF },
  { href: `${CONSOLE_PATH}/clients`, key: 'console.nav.clients', roles: ['admin', 'auditor'] },
  { href: `${CONSOLE_PATH}/keys`, key: 'console.nav.keys', roles: ['admin', 'auditor'] },
  { href: `${CONSOLE_PATH}/audit`, key: 'console.nav.audit', roles: ['admin', 'auditor'] },
];

export function hasRole(res: Response, ...roles: Role[]): boolean {
  const auth = locals(res).auth;
  return auth !== undefined && roles.some((r) => auth.roles.includes(r));
}

export function operatorOf(req: Request, res: Response): Operator {
  const auth = authOf(res);
  return { userId: auth.userId, roles: auth.roles, ip: req.ip ?? null, requestId: locals(res).requestId };
}

export function actorOf(req: Request, res: Response): AuditActor {
  return { actor: authOf(res).userId, ip: req.ip ?? null, requestId: locals(res).requestId };
}

/** A form's failure, shown next to that form. */
export interface FormError {
  form: string;
  status: number;
  code: string;
  message: string;
  fields: { field: string; reason: string }[];
}

/** The operator's language's message for an error code, else the error's own detail. */
export function formErrorOf(req: Request, form: string, err: AppError): FormError {
  const catalogue = messageCatalogues().en;
  const t = translator(localeOf(req));
  const key = `console.error.${err.code}`;
  const message = key in catalogue ? t(key) : (err.detail ?? err.title);
  // The console's own checks give catalogue keys as reasons; the flows' reasons are English.
  const fields = (err.invalidParams ?? []).map((p) => ({ field: p.pointer.replace(/^\//, '') || form, reason: p.reason.startsWith('console.invalid.') && p.reason in catalogue ? t(p.reason) : p.reason }));
  return { form, status: err.status, code: err.code, message, fields };
}

export interface ConsoleRenderData extends Record<string, unknown> {
  titleKey: string;
  formError?: FormError | undefined;
}

/** Renders a console page: the wide layout, the console navigation, the session CSRF token and the role flags. */
export function renderConsole(views: Views, req: Request, res: Response, status: number, template: string, data: ConsoleRenderData): void {
  const auth = authOf(res);
  const path = req.path;
  const consoleNav = CONSOLE_PAGES.filter((p) => p.roles.some((r) => auth.roles.includes(r))).map((p) => ({
    href: p.href,
    key: p.key,
    current: p.href === CONSOLE_PATH ? path === CONSOLE_PATH || path === `${CONSOLE_PATH}/` : path === p.href || path.startsWith(`${p.href}/`),
  }));
  const formError = data.formError;
  views.render(req, res, formError?.status ?? status, template, {
    ...data,
    wide: true,
    consoleNav,
    csrf: auth.csrfToken,
    can: { admin: auth.roles.includes('admin'), helpdesk: auth.roles.includes('helpdesk'), manageUsers: auth.roles.includes('admin') || auth.roles.includes('helpdesk') },
    formError,
    fieldError: (form: string, field: string) => (formError?.form === form ? formError.fields.find((f) => f.field === field || f.field.startsWith(`${field}/`))?.reason : undefined),
  });
}

/**
 * Runs a form's action; an AppError (bad input, a refused change) re-renders the page with
 * the failure next to the form and the error's status, and nothing was written (the flows
 * validate before they write, in one transaction).
 */
export function consoleForm(form: string, action: (req: Request, res: Response) => Promise<void>, rerender: (req: Request, res: Response, error: FormError) => Promise<void>): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    try {
      await action(req, res);
    } catch (err) {
      // A missing role is not a form error: the console's error page answers it.
      if (!isAppError(err) || err.code === 'forbidden' || err.code === 'unauthorized') {
        next(err);
        return;
      }
      await rerender(req, res, formErrorOf(req, form, err));
    }
  };
}

/** A string field of an urlencoded form ('' when absent). */
export function formField(req: Request, name: string): string {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : '';
}

/** A query-string field ('' when absent or repeated). */
export function queryField(req: Request, name: string): string {
  const v = req.query[name];
  return typeof v === 'string' ? v : '';
}

/** Reason fields: every console change says why (it goes into the audit record). */
export function reasonOf(req: Request, field = 'reason'): string {
  const reason = formField(req, field).trim();
  if (reason.length < 3 || reason.length > 500) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: `/${field}`, reason: 'console.invalid.reason' }] });
  }
  return reason;
}

/** `?notice=x` shown after a redirect, only when it is one of the page's own notices. */
export function noticeOf(req: Request, allowed: readonly string[]): string | undefined {
  const n = queryField(req, 'notice');
  return allowed.includes(n) ? n : undefined;
}

export function isoMinute(d: Date | null | undefined): string {
  return d === null || d === undefined ? '' : d.toISOString().slice(0, 16).replace('T', ' ');
}

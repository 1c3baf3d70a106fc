import express, { type Request, type RequestHandler, type Response, Router } from 'express';
import { AppError } from '../errors/app-error.ts';
import { getImport, importTokenFile, listImports } from '../flows/hardware-token-import.ts';
import { assignToken, getToken, listTokens, reportTokenLost, resyncToken, revokeToken, type TokenActor, type TokenStateView, unassignToken } from '../flows/hardware-tokens.ts';
import { declaredLengthOver, tokenUploadByteLimit } from '../flows/upload-limit.ts';
import { findUserByUsername } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { requireRole } from './authorize.ts';
import { CONSOLE_PATH, consoleForm, type FormError, formField, noticeOf, operatorOf, queryField, reasonOf, renderConsole } from './console-support.ts';
import { assertMayManageUser } from './hardware-tokens-router.ts';
import type { Views } from './pages-router.ts';

/** Bytes beyond the file's limit for the form's other fields and the multipart framing. */
const FORM_SLACK = 64 * 1024;

/**
 * Console: the hardware-token inventory. Every staff role reads; an administrator imports
 * vendor files (PSKC or CSV: all tokens or none, with the per-token report); admin and
 * helpdesk assign a token to a user (serial + a current code), take it back, report it lost,
 * revoke it and resync it — the flows and the rules of /v1/admin/hardware-tokens.
 */

const STATES: readonly TokenStateView[] = ['unassigned', 'assigned', 'locked', 'lost', 'revoked'];
const NOTICES = ['assigned', 'unassigned', 'lost', 'revoked', 'resynced'] as const;
const PAGE_SIZE = 50;
const manage = requireRole('admin', 'helpdesk');

function tokenActor(req: Request, res: Response): TokenActor {
  const op = operatorOf(req, res);
  return { actor: op.userId, ip: op.ip, requestId: op.requestId, by: 'helpdesk' };
}

function codeField(req: Request, name: string, optional = false): string | undefined {
  const v = formField(req, name).replace(/\s+/g, '');
  if (v === '' && optional) return undefined;
  if (!/^\d{4,10}$/.test(v)) throw new AppError('validation_failed', { invalidParams: [{ pointer: `/${name}`, reason: 'console.invalid.tokenCode' }] });
  return v;
}

/** A multipart form parsed by the platform (undici's FormData), after the role check and within the import size limit. */
async function multipartForm(req: Request): Promise<FormData> {
  const body = req.body as unknown;
  const type = req.get('content-type') ?? '';
  if (!Buffer.isBuffer(body) || !type.toLowerCase().startsWith('multipart/form-data')) {
    throw new AppError('unsupported_media_type', { detail: 'Upload the file with the form (multipart/form-data).' });
  }
  try {
    return await new Request('http://console.invalid/', { method: 'POST', headers: { 'content-type': type }, body }).formData();
  } catch {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/file', reason: 'console.invalid.upload' }] });
  }
}

export function consoleTokensPages(gw: Gateway, views: Views): Router {
  const router = Router();
  const base = `${CONSOLE_PATH}/tokens`;

  async function renderList(req: Request, res: Response, status: number, extra: { formError?: FormError } = {}) {
    const serial = queryField(req, 'serial').slice(0, 64);
    const state = STATES.find((s) => s === queryField(req, 'state'));
    const offset = /^\d{1,6}$/.test(queryField(req, 'offset')) ? Number(queryField(req, 'offset')) : 0;
    const [{ tokens, hasMore }, { imports }] = await Promise.all([
      listTokens(gw, { serial: serial === '' ? undefined : serial, state, limit: PAGE_SIZE, offset }),
      listImports(gw, { limit: 10, offset: 0 }),
    ]);
    renderConsole(views, req, res, status, 'console/tokens', {
      titleKey: 'console.tokens.title',
      tokens,
      imports,
      states: STATES,
      filter: { serial, state: state ?? '' },
      offset,
      next: hasMore ? offset + PAGE_SIZE : undefined,
      maxBytes: tokenUploadByteLimit(gw),
      ...extra,
    });
  }

  router.get(base, async (req, res) => {
    await renderList(req, res, 200);
  });

  async function renderImport(req: Request, res: Response, status: number, importId: string) {
    const [imp, { tokens }] = await Promise.all([getImport(gw, importId), listTokens(gw, { importId, limit: 500, offset: 0 })]);
    renderConsole(views, req, res, status, 'console/token-import', { titleKey: 'console.tokens.importTitle', imp, tokens });
  }

  // The file is read only after the session, the second factor and the role are checked.
  // The form's other fields and the multipart framing get 64 KiB beyond the file's limit.
  const raw = express.raw({ type: 'multipart/form-data', limit: tokenUploadByteLimit(gw) + FORM_SLACK });
  const upload: RequestHandler = (req, res, next) => {
    const over = declaredLengthOver(gw, req.get('content-length'), FORM_SLACK);
    if (over !== undefined) {
      next(over);
      return;
    }
    raw(req, res, next);
  };
  router.post(`${base}/import`, requireRole('admin'), upload, consoleForm('import', async (req, res) => {
    const form = await multipartForm(req);
    const file = form.get('file');
    if (!(file instanceof File) || file.size === 0) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/file', reason: 'console.invalid.file' }] });
    const password = form.get('password');
    const keyHex = form.get('key');
    if (typeof keyHex === 'string' && keyHex !== '' && !/^(?:[0-9a-fA-F]{2}){16,32}$/.test(keyHex.trim())) {
      throw new AppError('validation_failed', { invalidParams: [{ pointer: '/key', reason: 'console.invalid.hexKey' }] });
    }
    const reason = typeof form.get('reason') === 'string' ? String(form.get('reason')).trim() : '';
    if (reason.length < 3 || reason.length > 500) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/reason', reason: 'console.invalid.reason' }] });
    const op = operatorOf(req, res);
    const result = await importTokenFile(
      gw,
      {
        data: Buffer.from(await file.arrayBuffer()),
        fileName: (file.name || 'upload').slice(0, 200),
        format: /\.csv$/i.test(file.name) ? 'csv' : /\.(xml|pskc)$/i.test(file.name) ? 'pskc' : undefined,
        password: typeof password === 'string' && password !== '' ? password : undefined,
        psk: typeof keyHex === 'string' && keyHex.trim() !== '' ? Buffer.from(keyHex.trim(), 'hex') : undefined,
        source: 'api',
      },
      { actor: op.userId, ip: op.ip, requestId: op.requestId, reason },
    );
    // Post/redirect/get: the report's address carries no form token and can be reloaded.
    res.redirect(303, `${base}/imports/${encodeURIComponent(result.id)}`);
  }, (req, res, formError) => renderList(req, res, formError.status, { formError })));

  router.get(`${base}/imports/:id`, async (req, res) => {
    await renderImport(req, res, 200, String(req.params.id));
  });

  async function renderToken(req: Request, res: Response, status: number, extra: { formError?: FormError } = {}) {
    const token = await getToken(gw, String(req.params.serial));
    renderConsole(views, req, res, status, 'console/token', { titleKey: 'console.tokens.detailTitle', token, notice: noticeOf(req, NOTICES), username: formField(req, 'username'), ...extra });
  }

  router.get(`${base}/:serial`, async (req, res) => {
    await renderToken(req, res, 200);
  });

  const rerender = (req: Request, res: Response, formError: FormError) => renderToken(req, res, formError.status, { formError });
  const done = (req: Request, res: Response, notice: (typeof NOTICES)[number]) => res.redirect(303, `${base}/${encodeURIComponent(String(req.params.serial))}?notice=${notice}`);

  router.post(`${base}/:serial/assign`, manage, consoleForm('assign', async (req, res) => {
    const username = formField(req, 'username').trim();
    const user = username === '' ? undefined : await findUserByUsername(gw, username);
    if (user === undefined) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/username', reason: 'console.invalid.noUser' }] });
    const code = codeField(req, 'code') ?? '';
    const nextCode = codeField(req, 'nextCode', true);
    const reason = reasonOf(req);
    await assertMayManageUser(gw, operatorOf(req, res), user.id);
    await assignToken(gw, tokenActor(req, res), { serial: String(req.params.serial), userId: user.id, code, nextCode, reason });
    done(req, res, 'assigned');
  }, rerender));

  for (const [action, run, notice] of [
    ['unassign', unassignToken, 'unassigned'],
    ['lost', reportTokenLost, 'lost'],
    ['revoke', revokeToken, 'revoked'],
  ] as const) {
    router.post(`${base}/:serial/${action}`, manage, consoleForm(action, async (req, res) => {
      const serial = String(req.params.serial);
      const reason = reasonOf(req);
      await assertMayManageUser(gw, operatorOf(req, res), (await getToken(gw, serial)).userId);
      await run(gw, tokenActor(req, res), serial, reason);
      done(req, res, notice);
    }, rerender));
  }

  router.post(`${base}/:serial/resync`, manage, consoleForm('resync', async (req, res) => {
    const serial = String(req.params.serial);
    const code = codeField(req, 'code') ?? '';
    const nextCode = codeField(req, 'nextCode') ?? '';
    const reason = reasonOf(req);
    await assertMayManageUser(gw, operatorOf(req, res), (await getToken(gw, serial)).userId);
    await resyncToken(gw, tokenActor(req, res), serial, { code, nextCode }, reason);
    done(req, res, 'resynced');
  }, rerender));

  return router;
}

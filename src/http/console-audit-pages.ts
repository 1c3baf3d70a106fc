import { type Request, type Response, Router } from 'express';
import { AppError, type InvalidParam } from '../errors/app-error.ts';
import { type AuditFilter, listAuditEvents, startAuditExport, verifyAuditLog } from '../flows/admin-users.ts';
import type { Gateway } from '../gateway.ts';
import { requireRole } from './authorize.ts';
import { CONSOLE_PATH, formErrorOf, operatorOf, queryField, renderConsole } from './console-support.ts';
import type { Views } from './pages-router.ts';

/**
 * Console: the audit log (admin, auditor). Filter by type (or `prefix*`), actor, subject and
 * time; verify the hash chain (the result is shown and itself recorded, as the API does);
 * export the filtered events as NDJSON, one event per line, oldest last like the list.
 */

const PAGE_SIZE = 50;
const EXPORT_BATCH = 500;
const readers = requireRole('admin', 'auditor');

type Filter = Omit<AuditFilter, 'limit' | 'offset'>;

/** The filter form's values, checked like GET /v1/admin/audit's query. Times are UTC. */
function filterOf(req: Request): { filter: Filter; values: Record<string, string> } {
  const values = { type: queryField(req, 'type').trim(), actor: queryField(req, 'actor').trim(), subject: queryField(req, 'subject').trim(), since: queryField(req, 'since').trim(), until: queryField(req, 'until').trim() };
  const problems: InvalidParam[] = [];
  const filter: Filter = {};
  if (values.type !== '') {
    if (/^[a-z0-9_.]{1,64}\*?$/.test(values.type)) filter.type = values.type;
    else problems.push({ pointer: '/type', reason: 'console.invalid.eventType' });
  }
  for (const k of ['actor', 'subject'] as const) {
    if (values[k] === '') continue;
    if (values[k].length <= 128) filter[k] = values[k];
    else problems.push({ pointer: `/${k}`, reason: 'console.invalid.tooLong' });
  }
  for (const k of ['since', 'until'] as const) {
    if (values[k] === '') continue;
    const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}))?$/.exec(values[k]);
    const at = m === null ? Number.NaN : Date.parse(`${m[1]}T${m[2] ?? '00:00'}:00Z`);
    if (Number.isFinite(at)) filter[k] = new Date(at);
    else problems.push({ pointer: `/${k}`, reason: 'console.invalid.utcTime' });
  }
  if (problems.length > 0) throw new AppError('validation_failed', { invalidParams: problems });
  return { filter, values };
}

export function consoleAuditPages(gw: Gateway, views: Views): Router {
  const router = Router();
  const base = `${CONSOLE_PATH}/audit`;

  async function renderAudit(req: Request, res: Response, status: number, extra: { chain?: Awaited<ReturnType<typeof verifyAuditLog>> } = {}) {
    const offset = /^\d{1,7}$/.test(queryField(req, 'offset')) ? Number(queryField(req, 'offset')) : 0;
    let parsed: ReturnType<typeof filterOf>;
    try {
      parsed = filterOf(req);
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      const values = { type: queryField(req, 'type'), actor: queryField(req, 'actor'), subject: queryField(req, 'subject'), since: queryField(req, 'since'), until: queryField(req, 'until') };
      renderConsole(views, req, res, err.status, 'console/audit', { titleKey: 'console.audit.title', events: [], values, query: '', offset: 0, formError: formErrorOf(req, 'filter', err), ...extra });
      return;
    }
    const { events, hasMore } = await listAuditEvents(gw, { ...parsed.filter, limit: PAGE_SIZE, offset });
    const query = new URLSearchParams(Object.entries(parsed.values).filter(([, v]) => v !== '')).toString();
    renderConsole(views, req, res, status, 'console/audit', {
      titleKey: 'console.audit.title',
      events,
      values: parsed.values,
      query,
      offset,
      next: hasMore ? offset + PAGE_SIZE : undefined,
      prev: offset > 0 ? Math.max(0, offset - PAGE_SIZE) : undefined,
      ...extra,
    });
  }

  router.get(base, readers, async (req, res) => {
    await renderAudit(req, res, 200);
  });

  router.post(`${base}/verify`, readers, async (req, res) => {
    const chain = await verifyAuditLog(gw, operatorOf(req, res));
    await renderAudit(req, res, 200, { chain });
  });

  router.get(`${base}/export.ndjson`, readers, async (req, res) => {
    let parsed: ReturnType<typeof filterOf>;
    try {
      parsed = filterOf(req);
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      // A bad filter is shown on the page, next to the filter form.
      res.redirect(303, `${base}?${new URLSearchParams(req.query as Record<string, string>).toString()}`);
      return;
    }
    const { filter, values } = parsed;
    // Recorded before anything is sent (an export whose record failed would leave no trace),
    // then read newest first by sequence number from that snapshot down: paging by offset
    // while the log grows re-sent events across page boundaries.
    let cursor = await startAuditExport(gw, operatorOf(req, res), values);
    res.status(200).type('application/x-ndjson');
    res.setHeader('Content-Disposition', 'attachment; filename="stepgate-audit.ndjson"');
    for (;;) {
      const { events, hasMore } = await listAuditEvents(gw, { ...filter, maxSeq: cursor, limit: EXPORT_BATCH, offset: 0 });
      for (const e of events) {
        res.write(`${JSON.stringify({ seq: e.seq, at: e.at.toISOString(), type: e.type, actor: e.actor, subject: e.subject, ip: e.ip, request_id: e.requestId, data: e.data, hash: e.hash })}\n`);
      }
      const last = events.at(-1);
      if (!hasMore || last === undefined) break;
      cursor = last.seq - 1;
    }
    res.end();
  });

  return router;
}

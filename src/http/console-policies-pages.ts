import { type Request, type Response, Router } from 'express';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { AppError } from '../errors/app-error.ts';
import { type DryRunResult, diffPolicyVersions, evaluatePolicyDryRun, getCurrentPolicySet, getPolicySetVersion, MAX_COMMENT_LENGTH, policySetHistory, savePolicySet } from '../flows/policies.ts';
import type { Gateway } from '../gateway.ts';
import type { PolicySetDiff } from '../policy/diff-policy-sets.ts';
import { requireRole } from './authorize.ts';
import { actorOf, CONSOLE_PATH, consoleForm, type FormError, formField, noticeOf, queryField, renderConsole } from './console-support.ts';
import type { Views } from './pages-router.ts';
import { evaluateBody } from './policies-router.ts';
import { parseInput } from './validate.ts';

/**
 * Console: factor policies. Every staff role reads the set, its history and diffs, and runs
 * the dry-run evaluator (which writes nothing); only an administrator saves. The editor holds
 * the set as YAML (the policy file format); a save is validated as a whole by the same
 * checks as PUT /v1/admin/policies and `stepgate policies apply`, needs a comment (the why,
 * stored with the version and audited) and is refused with 409 when another version was
 * stored since the editor was opened.
 */

const NOTICES = ['saved', 'unchanged'] as const;

function yamlField(req: Request, name: string): unknown {
  const text = formField(req, name);
  try {
    return parseYaml(text, { maxAliasCount: 10 }) as unknown;
  } catch (err) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: `/${name}`, reason: `not YAML or JSON: ${(err as Error).message.split('\n')[0] ?? ''}` }] });
  }
}

function policiesOfText(value: unknown): unknown {
  // The policy file format ({policies: [...]}) or a bare list.
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && 'policies' in value) return (value as { policies: unknown }).policies;
  return value ?? [];
}

export function consolePoliciesPages(gw: Gateway, views: Views): Router {
  const router = Router();
  const base = `${CONSOLE_PATH}/policies`;

  async function renderPolicies(req: Request, res: Response, status: number, extra: { formError?: FormError; editor?: string; comment?: string; baseVersion?: number; dryRun?: DryRunResult; dryRunInput?: Record<string, string> } = {}) {
    const [current, { versions }] = await Promise.all([getCurrentPolicySet(gw), policySetHistory(gw, { limit: 20, offset: 0 })]);
    renderConsole(views, req, res, status, 'console/policies', {
      titleKey: 'console.policies.title',
      current,
      versions,
      editor: extra.editor ?? toYaml({ policies: current.policies }, { lineWidth: 0 }),
      comment: extra.comment ?? '',
      baseVersion: extra.baseVersion ?? current.version,
      maxComment: MAX_COMMENT_LENGTH,
      notice: noticeOf(req, NOTICES),
      dryRun: extra.dryRun,
      dryRunInput: extra.dryRunInput ?? { action: '', context: '', subject: '', proposed: '' },
      formError: extra.formError,
    });
  }

  router.get(base, async (req, res) => {
    await renderPolicies(req, res, 200);
  });

  router.post(base, requireRole('admin'), consoleForm('save', async (req, res) => {
    const comment = formField(req, 'comment').trim();
    if (comment.length < 3 || comment.length > MAX_COMMENT_LENGTH) {
      throw new AppError('validation_failed', { invalidParams: [{ pointer: '/comment', reason: `say why (3 to ${MAX_COMMENT_LENGTH} characters)` }] });
    }
    const baseVersion = /^\d{1,9}$/.test(formField(req, 'baseVersion')) ? Number(formField(req, 'baseVersion')) : undefined;
    const policies = policiesOfText(yamlField(req, 'policies'));
    const saved = await savePolicySet(gw, policies, { who: actorOf(req, res), comment, baseVersion });
    res.redirect(303, `${base}?notice=${saved.changed ? 'saved' : 'unchanged'}`);
  }, (req, res, formError) =>
    // The operator's text comes back as typed, with the failure next to it.
    renderPolicies(req, res, formError.status, { formError, editor: formField(req, 'policies'), comment: formField(req, 'comment'), baseVersion: Number(formField(req, 'baseVersion')) || 0 }),
  ));

  router.post(`${base}/evaluate`, consoleForm('dryRun', async (req, res) => {
    const input: Record<string, unknown> = { action: formField(req, 'action').trim(), context: yamlField(req, 'context') ?? {} };
    const subject = formField(req, 'subject').trim();
    if (subject !== '') input.subject = subject;
    if (formField(req, 'proposed') === '1') input.policies = policiesOfText(yamlField(req, 'policies'));
    const result = await evaluatePolicyDryRun(gw, parseInput(evaluateBody, input));
    await renderPolicies(req, res, 200, { dryRun: result, ...editorState(req) });
  }, (req, res, formError) => renderPolicies(req, res, formError.status, { formError, ...editorState(req) })));

  function editorState(req: Request) {
    const proposed = formField(req, 'proposed') === '1';
    return {
      dryRunInput: { action: formField(req, 'action'), context: formField(req, 'context'), subject: formField(req, 'subject'), proposed: proposed ? '1' : '' },
      ...(proposed ? { editor: formField(req, 'policies') } : {}),
    };
  }

  router.get(`${base}/versions/:version`, async (req, res) => {
    const raw = String(req.params.version);
    if (!/^\d{1,9}$/.test(raw)) throw new AppError('not_found', { detail: 'No such policy set version.' });
    const version = await getPolicySetVersion(gw, Number(raw));
    renderConsole(views, req, res, 200, 'console/policy-version', { titleKey: 'console.policies.versionTitle', version, yaml: toYaml({ policies: version.policies }, { lineWidth: 0 }) });
  });

  router.get(`${base}/diff`, async (req, res) => {
    const current = await getCurrentPolicySet(gw);
    const num = (name: string, fallback: number) => (/^\d{1,9}$/.test(queryField(req, name)) ? Number(queryField(req, name)) : fallback);
    const to = num('to', current.version);
    const from = num('from', Math.max(0, to - 1));
    const diff: PolicySetDiff = await diffPolicyVersions(gw, from, to);
    renderConsole(views, req, res, 200, 'console/policy-diff', { titleKey: 'console.policies.diffTitle', from, to, diff, show: (v: unknown) => (v === undefined ? '' : JSON.stringify(v)) });
  });

  return router;
}

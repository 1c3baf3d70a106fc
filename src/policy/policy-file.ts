import { Document, isNode, isSeq, LineCounter, parseDocument, visit } from 'yaml';
import type { Policy, PolicyConditions } from './policy-schema.ts';
import { type PolicyValidationCode, type PolicyValidationError, type PolicyValidationOptions, validatePolicySet } from './validate-policy-set.ts';

/**
 * Policies as code: the YAML file `stepgate policies apply` reads and `stepgate policies export`
 * prints. The file is `{ policies: [...] }`, the same shape as the admin API body.
 */

export interface PolicyFileError extends Omit<PolicyValidationError, 'code'> {
  code: PolicyValidationCode | 'invalid_yaml';
  /** 1-based line in the file the pointer leads to (or near), when known. */
  line?: number;
}

export type PolicyFileResult = { ok: true; policies: Policy[] } | { ok: false; errors: PolicyFileError[] };

function pointerPath(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** Parses and validates a policy file. YAML syntax errors, duplicate keys and schema errors all come back as errors. */
export function parsePolicyFile(text: string, options: Omit<PolicyValidationOptions, 'pointerPrefix'>): PolicyFileResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, strict: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.map((e) => ({ policyId: null, pointer: '', reason: e.message, code: 'invalid_yaml', line: lineCounter.linePos(e.pos[0]).line })),
    };
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    // Alias bombs and the like: still bad input, not a crash.
    return { ok: false, errors: [{ policyId: null, pointer: '', reason: err instanceof Error ? err.message : 'unreadable YAML', code: 'invalid_yaml' }] };
  }
  const lineOf = (pointer: string): number | undefined => {
    const path = pointerPath(pointer);
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
      if (isNode(node) && node.range) return lineCounter.linePos(node.range[0]).line;
    }
    return undefined;
  };
  const withLine = (e: PolicyValidationError): PolicyFileError => {
    const line = lineOf(e.pointer);
    return line === undefined ? e : { ...e, line };
  };

  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, errors: [withLine({ policyId: null, pointer: '', reason: 'must be a mapping with a policies list', code: 'invalid' })] };
  }
  const errors: PolicyFileError[] = [];
  for (const key of Object.keys(value)) {
    if (key !== 'policies') errors.push(withLine({ policyId: null, pointer: `/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`, reason: 'unknown field', code: 'invalid' }));
  }
  if (!Object.hasOwn(value, 'policies')) {
    errors.push({ policyId: null, pointer: '/policies', reason: 'required', code: 'invalid' });
    return { ok: false, errors };
  }
  const result = validatePolicySet((value as { policies: unknown }).policies, { ...options, pointerPrefix: '/policies' });
  if (!result.ok) errors.push(...result.errors.map(withLine));
  if (errors.length > 0) return { ok: false, errors };
  return result;
}

function defined<T extends object>(entries: [string, unknown][]): T {
  return Object.fromEntries(entries.filter(([, v]) => v !== undefined)) as T;
}

function canonicalConditions(when: PolicyConditions): PolicyConditions {
  const a = when.amount;
  const v = when.velocity;
  return defined<PolicyConditions>([
    ['amount', a === undefined ? undefined : defined([['gt', a.gt], ['gte', a.gte], ['lt', a.lt], ['lte', a.lte], ['eq', a.eq], ['currency', a.currency]])],
    [
      'fields',
      when.fields === undefined
        ? undefined
        : Object.fromEntries(
            Object.keys(when.fields)
              .sort()
              .map((name) => {
                const c = when.fields![name]!;
                return [name, defined([['eq', c.eq], ['neq', c.neq], ['in', c.in], ['notIn', c.notIn]])];
              }),
          ),
    ],
    ['groups', when.groups === undefined ? undefined : { anyOf: [...when.groups.anyOf] }],
    [
      'velocity',
      v === undefined
        ? undefined
        : defined([['windowSeconds', v.windowSeconds], ['maxCount', v.maxCount], ['maxAmount', v.maxAmount], ['currency', v.currency]]),
    ],
  ]);
}

/** One policy with its keys in the documented order, defaults written out. */
export function canonicalPolicy(p: Policy): Policy {
  return defined<Policy>([
    ['id', p.id],
    ['action', p.action],
    ['priority', p.priority],
    ['description', p.description],
    ['when', p.when === undefined ? undefined : canonicalConditions(p.when)],
    ['require', { anyOf: p.require.anyOf.map((alt) => [...alt]) }],
    ['acr', p.acr],
    ['tokenTtlSeconds', p.tokenTtlSeconds],
    ['maxAgeSeconds', p.maxAgeSeconds],
    ['totp', p.totp === undefined ? undefined : defined([['algorithms', p.totp.algorithms], ['digits', p.totp.digits], ['periodSeconds', p.totp.periodSeconds]])],
  ]);
}

/** Policies in the order they are read: by action, then priority, then id. */
export function sortPolicies(policies: readonly Policy[]): Policy[] {
  const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  return [...policies].sort((a, b) => cmp(a.action, b.action) || a.priority - b.priority || cmp(a.id, b.id));
}

/**
 * The set as a policy file: sorted, canonical key order, defaults explicit, lists in flow
 * style. `serializePolicySet(parse(serializePolicySet(x)))` is byte-for-byte the same text.
 */
export function serializePolicySet(policies: readonly Policy[]): string {
  const doc = new Document({ policies: sortPolicies(policies).map(canonicalPolicy) });
  // Factor sets, groups and value lists read better on one line; the list of policies does not.
  visit(doc, {
    Seq(_key, node) {
      node.flow = true;
    },
  });
  const top = doc.get('policies', true);
  if (isSeq(top)) top.flow = false;
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}

/** A JSON value as it travels in `authorization_details`. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function assertJson(value: unknown, path: string): void {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`${path} must be a finite number`);
      return;
    case 'object':
      if (value === null) return;
      if (Array.isArray(value)) {
        value.forEach((item, i) => {
          assertJson(item, `${path}[${i}]`);
        });
        return;
      }
      if (!isPlainObject(value)) throw new TypeError(`${path} must be a plain JSON object`);
      for (const [key, item] of Object.entries(value)) assertJson(item, `${path}.${key}`);
      return;
    default:
      throw new TypeError(`${path} must be a JSON value (got ${typeof value})`);
  }
}

/**
 * Misuse guard for the relying service's own expected context: it must be a plain object of
 * JSON values (no `undefined`, Date, NaN…) and must not contain `type` (that is the action).
 */
export function assertExpectedContext(value: unknown): asserts value is JsonObject {
  if (!isPlainObject(value)) throw new TypeError('expectedContext must be a plain object');
  if (Object.hasOwn(value, 'type')) throw new TypeError('expectedContext must not contain "type": pass the action as expectedAction');
  assertJson(value, 'expectedContext');
}

/**
 * Exact JSON equality: same type (the string "120" is not the number 120), strings compared
 * code unit by code unit ("120.00" is not "120.0"), arrays in order, objects with exactly the
 * same keys. No coercion, no normalisation.
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === null || b === null) return a === b;
  if (typeof a !== typeof b) return false;
  if (typeof a !== 'object') return a === b;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => jsonEqual(item, b[i]));
  }
  if (Array.isArray(b) || !isPlainObject(a) || !isPlainObject(b)) return false;
  const keysA = Object.keys(a);
  if (keysA.length !== Object.keys(b).length) return false;
  return keysA.every((key) => Object.hasOwn(b, key) && jsonEqual(a[key], b[key]));
}

/**
 * Compares the context the relying service is about to act on with the one the user approved
 * (the `authorization_details` entry without `type`). Returns the first differing top-level
 * field in sorted order — missing on either side counts — or undefined when they are equal.
 */
export function firstContextDifference(expected: JsonObject, approved: Record<string, unknown>): string | undefined {
  // The common case, equal contexts, without building and sorting the union of the keys:
  // every expected field equal, and nothing else in `approved` but `type`.
  let matched = 0;
  for (const key in expected) {
    if (!Object.hasOwn(expected, key)) continue;
    if (!Object.hasOwn(approved, key) || !jsonEqual(expected[key], approved[key])) return sortedFirstDifference(expected, approved);
    matched += 1;
  }
  const approvedKeys = Object.keys(approved).length - (Object.hasOwn(approved, 'type') ? 1 : 0);
  return approvedKeys === matched ? undefined : sortedFirstDifference(expected, approved);
}

function sortedFirstDifference(expected: JsonObject, approved: Record<string, unknown>): string | undefined {
  const keys = new Set([...Object.keys(expected), ...Object.keys(approved).filter((key) => key !== 'type')]);
  for (const key of [...keys].sort()) {
    if (!Object.hasOwn(expected, key) || !Object.hasOwn(approved, key)) return key;
    if (!jsonEqual(expected[key], approved[key])) return key;
  }
  return undefined;
}

import { XMLParser, XMLValidator } from 'fast-xml-parser';

/**
 * A hostile-input-safe XML reader for PSKC: no DTD, no entity expansion, bounded nesting,
 * namespace prefixes dropped (PSKC mixes pskc:, xenc:, xenc11:, ds: and pkcs5: — their
 * local names do not collide). Every element becomes an array of nodes so lookups are
 * uniform; attributes are `@_Name`, text is `#text`.
 */
export type XmlNode = { [name: string]: unknown };

export class XmlRefused extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(reason);
    this.name = 'XmlRefused';
    this.reason = reason;
  }
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  removeNSPrefix: true,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  // Entities stay as written: a document cannot declare any (no DTD), and the five
  // predefined ones are decoded by text() only where text is read.
  processEntities: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  maxNestedTags: 32,
  // Callbacks get a matcher instead of a path string built for every tag: half the parse
  // time of a 100,000-token file (nothing here needs the path).
  jPath: false,
  isArray: (_tag, _path, _leaf, isAttribute) => !isAttribute,
});

/**
 * Parses a whole document. Refuses (XmlRefused) a DTD or entity declaration anywhere —
 * even inside a comment, we do not try to be clever — and malformed XML.
 */
export function parseXml(text: string): XmlNode {
  if (/<!DOCTYPE/i.test(text) || /<!ENTITY/i.test(text)) throw new XmlRefused('DTDs and entity declarations are not accepted');
  const valid = XMLValidator.validate(text);
  // Only where and what kind (InvalidTag, InvalidAttr…): the parser's message quotes the
  // names and characters it choked on, and a broken file may have a seed just there.
  if (valid !== true) throw new XmlRefused(`malformed XML at line ${valid.err.line}, column ${valid.err.col} (${valid.err.code})`);
  try {
    return parser.parse(text) as XmlNode;
  } catch {
    throw new XmlRefused('malformed XML');
  }
}

export function children(node: unknown, name: string): XmlNode[] {
  if (typeof node !== 'object' || node === null) return [];
  const v = (node as XmlNode)[name];
  if (!Array.isArray(v)) return [];
  // A text-only element parses as a string; wrap it so every child is a node.
  return v.map((c) => (typeof c === 'object' && c !== null ? (c as XmlNode) : { '#text': String(c) }));
}

export function child(node: unknown, name: string): XmlNode | undefined {
  return children(node, name)[0];
}

const PREDEFINED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos);/g, (_m, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(Math.min(Number.parseInt(e.slice(2), 16), 0x10ffff));
    if (e.startsWith('#')) return String.fromCodePoint(Math.min(Number.parseInt(e.slice(1), 10), 0x10ffff));
    return PREDEFINED[e] ?? '';
  });
}

/** The element's text (entities decoded), or undefined when it has none. */
export function text(node: XmlNode | undefined): string | undefined {
  if (node === undefined) return undefined;
  const t = node['#text'];
  if (t === undefined || t === null) return undefined;
  return decodeEntities(String(t));
}

export function attr(node: XmlNode | undefined, name: string): string | undefined {
  if (node === undefined) return undefined;
  const v = node[`@_${name}`];
  return v === undefined || v === null ? undefined : decodeEntities(String(v));
}

/** Text of the first element along a path of child names. */
export function textAt(node: XmlNode | undefined, ...path: string[]): string | undefined {
  let cur: XmlNode | undefined = node;
  for (const name of path) cur = child(cur, name);
  return text(cur);
}

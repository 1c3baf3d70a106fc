import { createHash, createHmac } from 'node:crypto';

/**
 * Alibaba Cloud request signature V3, `ACS3-HMAC-SHA256` ("V3版本请求体&签名机制",
 * help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature):
 *
 *   CanonicalRequest = Method \n CanonicalURI \n CanonicalQueryString \n
 *                      CanonicalHeaders \n SignedHeaders \n HashedRequestPayload
 *   StringToSign     = "ACS3-HMAC-SHA256" \n hex(SHA256(CanonicalRequest))
 *   Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
 *   Authorization    = ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<names>,Signature=<sig>
 *
 * CanonicalHeaders is `name:value\n` for each signed header (lower-case names, sorted, values
 * trimmed); every `x-acs-*` header, `host` and `content-type` present must be signed. Query
 * keys are sorted and both keys and values RFC 3986-encoded (space → %20, `*` → %2A, `~`
 * kept). Pure: the caller supplies the date and nonce, so tests check it against Aliyun's
 * published worked example.
 */
export const ACS3_ALGORITHM = 'ACS3-HMAC-SHA256';

/** RFC 3986 percent-encoding: only A–Z a–z 0–9 - _ . ~ stay as they are. */
export function acsPercentEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export function canonicalQueryString(query: Record<string, string>): string {
  return Object.keys(query)
    .sort()
    .map((k) => `${acsPercentEncode(k)}=${acsPercentEncode(query[k] ?? '')}`)
    .join('&');
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface Acs3Request {
  method: string;
  /** `/` for RPC-style APIs such as Dysmsapi. */
  canonicalUri: string;
  query: Record<string, string>;
  /** Every header that will be sent and must be signed (host, x-acs-*, content-type), any case. */
  headers: Record<string, string>;
  body: string | Buffer;
}

export interface Acs3Signature {
  canonicalRequest: string;
  stringToSign: string;
  signedHeaders: string;
  signature: string;
  authorization: string;
}

export function signAcs3(request: Acs3Request, credentials: { accessKeyId: string; accessKeySecret: string }): Acs3Signature {
  const headers = new Map<string, string>();
  for (const [name, value] of Object.entries(request.headers)) {
    const lower = name.toLowerCase();
    if (lower === 'host' || lower === 'content-type' || lower.startsWith('x-acs-')) headers.set(lower, value.trim());
  }
  const names = [...headers.keys()].sort();
  const canonicalHeaders = names.map((n) => `${n}:${headers.get(n)}\n`).join('');
  const signedHeaders = names.join(';');
  const hashedPayload = sha256Hex(request.body);
  const canonicalRequest = [request.method.toUpperCase(), request.canonicalUri, canonicalQueryString(request.query), canonicalHeaders, signedHeaders, hashedPayload].join('\n');
  const stringToSign = `${ACS3_ALGORITHM}\n${sha256Hex(canonicalRequest)}`;
  const signature = createHmac('sha256', credentials.accessKeySecret).update(stringToSign, 'utf8').digest('hex');
  return {
    canonicalRequest,
    stringToSign,
    signedHeaders,
    signature,
    authorization: `${ACS3_ALGORITHM} Credential=${credentials.accessKeyId},SignedHeaders=${signedHeaders},Signature=${signature}`,
  };
}

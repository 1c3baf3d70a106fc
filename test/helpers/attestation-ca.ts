import { execFileSync } from 'node:child_process';
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A throw-away attestation PKI made with the openssl command line (an independent tool): a
 * root CA and a batch attestation certificate shaped as FIDO requires for `packed` (OU
 * "Authenticator Attestation", CA:FALSE, the id-fido-gen-ce-aaguid extension).
 */
export interface AttestationPki {
  dir: string;
  rootPem: string;
  /** A PEM bundle file holding the root (for webauthn.trustRootsFile). */
  rootsFile: string;
  leafKey: KeyObject;
  /** DER chain for attStmt.x5c, leaf first. */
  chain: Buffer[];
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeAttestationPki(aaguid: string, name = 'Test'): AttestationPki {
  const dir = mkdtempSync(join(tmpdir(), 'stepgate-att-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30', '-subj', `/C=DE/O=${name} CA/CN=${name} Attestation Root`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(dir, ['req', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', `/C=DE/O=${name} Vendor/OU=Authenticator Attestation/CN=${name} Batch`]);
  writeFileSync(join(dir, 'ext.cnf'), `basicConstraints=critical,CA:FALSE\n1.3.6.1.4.1.45724.1.1.4=DER:04:10:${aaguid.replace(/-/g, '').match(/../g)!.join(':')}\n`);
  openssl(dir, ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '30', '-extfile', 'ext.cnf']);
  const rootPem = readFileSync(join(dir, 'ca.pem'), 'utf8');
  const rootsFile = join(dir, 'roots.pem');
  writeFileSync(rootsFile, rootPem);
  return {
    dir,
    rootPem,
    rootsFile,
    leafKey: createPrivateKey(readFileSync(join(dir, 'leaf.key'))),
    chain: [Buffer.from(new X509Certificate(readFileSync(join(dir, 'leaf.pem'))).raw)],
  };
}

export { readPskc, PSKC_NAMESPACE, type ReadPskcOptions, type PskcEncryption } from './read-pskc.ts';
export { readCsv, type ReadCsvOptions } from './read-csv.ts';
export { readTokenFile, type TokenFileFormat, type ReadTokenFileOptions, type TokenFile } from './read-token-file.ts';
export { normaliseSerial, TOKEN_ALGORITHMS, type TokenSpec, type TokenKind, type TokenAlgorithm, type TokenProblem, type TokenProblemCode } from './token-spec.ts';

import { createHash } from 'node:crypto';
import { newId } from '../crypto/ids.ts';
import { AppError, isAppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import type { TokenFile, TokenFileFormat, TokenProblem, TokenSpec } from '../pskc/index.ts';
import type { HardwareTokenImportsTable, HardwareTokensTable } from '../store/schema.ts';
import { isUniqueViolation } from '../store/users-repository.ts';
import type { AuditActor } from './users.ts';

/**
 * Importing a vendor file (PSKC or CSV) into the hardware-token inventory: all or nothing.
 * The file is read, decrypted and checked completely, every seed is sealed, and only then
 * one transaction inserts every token (or, on any problem, none). Failed attempts are kept
 * in the import history too, with the reason; seeds are never logged or audited.
 */

export interface ImportTokenFileInput {
  data: Buffer;
  /** Shown in the history; not a path on the server. */
  fileName: string;
  format?: TokenFileFormat | undefined;
  password?: string | undefined;
  psk?: Buffer | undefined;
  source: 'api' | 'cli';
}

export interface ImportView {
  id: string;
  createdAt: Date;
  actor: string;
  source: 'api' | 'cli';
  fileName: string;
  fileSha256: string;
  format: 'pskc' | 'csv';
  encryption: 'none' | 'psk' | 'pbkdf2';
  status: 'completed' | 'failed';
  tokenCount: number;
  problemCount: number;
  errorCode: string | null;
}

export function tokenSeedAad(tokenId: string): string {
  return `hardware_tokens.seed_sealed:${tokenId}`;
}

/** Per-token problems listed in one error; the rest are only counted. */
const LISTED_PROBLEMS = 100;
const INSERT_CHUNK = 500;

function rejected(problems: TokenProblem[], total: number): AppError {
  const listed = problems.slice(0, LISTED_PROBLEMS);
  const more = problems.length > listed.length ? ` The first ${listed.length} are listed.` : '';
  return new AppError('token_import_rejected', {
    detail: `${problems.length} of ${total} tokens are not acceptable; nothing was imported.${more}`,
    // p.serial is set only where the reader judged it safe to repeat (a valid serial that
    // does not look like a seed); CSV problems name the line and column instead.
    invalidParams: listed.map((p) => ({ pointer: `/tokens/${p.index}`, reason: `${p.serial === null ? '' : `serial ${p.serial}: `}${p.code}: ${p.reason}` })),
  });
}

function toImportView(row: HardwareTokenImportsTable): ImportView {
  return {
    id: row.id,
    createdAt: new Date(Number(row.created_at)),
    actor: row.actor,
    source: row.source,
    fileName: row.file_name,
    fileSha256: row.file_sha256,
    format: row.format,
    encryption: row.encryption,
    status: row.status,
    tokenCount: Number(row.token_count),
    problemCount: Number(row.problem_count),
    errorCode: row.error_code,
  };
}

/** Serials of the file that the inventory already holds (any state: serials are never reused). */
async function existingSerials(gw: Gateway, tokens: TokenSpec[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < tokens.length; i += INSERT_CHUNK) {
    const serials = tokens.slice(i, i + INSERT_CHUNK).map((t) => t.serial);
    const rows = await gw.store.db.selectFrom('hardware_tokens').select('serial').where('serial', 'in', serials).execute();
    for (const r of rows) found.add(r.serial);
  }
  return found;
}

export async function importTokenFile(gw: Gateway, input: ImportTokenFileInput, who: AuditActor & { reason?: string }): Promise<ImportView> {
  const now = gw.clock.now();
  const importId = newId('hwi');
  const fileName = input.fileName.replace(/[^\p{L}\p{N} ._()+-]/gu, '_').slice(0, 200) || 'upload';
  const base: HardwareTokenImportsTable = {
    id: importId,
    created_at: now.getTime(),
    actor: who.actor ?? 'unknown',
    source: input.source,
    file_name: fileName,
    file_sha256: createHash('sha256').update(input.data).digest('hex'),
    format: input.format ?? 'pskc',
    encryption: 'none',
    status: 'failed',
    token_count: 0,
    problem_count: 0,
    error_code: null,
  };
  const audit = { actor: who.actor, ip: who.ip ?? null, requestId: who.requestId ?? null };

  const fail = async (err: AppError, file: Partial<TokenFile>, problemCount: number): Promise<never> => {
    const row: HardwareTokenImportsTable = {
      ...base,
      format: file.format ?? base.format,
      encryption: file.encryption ?? base.encryption,
      token_count: (file.tokens?.length ?? 0) + problemCount,
      problem_count: problemCount,
      error_code: err.code,
    };
    await gw.store.db.transaction().execute(async (tx) => {
      await tx.insertInto('hardware_token_imports').values(row).execute();
      await gw.audit.append(tx, {
        ...audit,
        type: 'hardware_token.import_failed',
        data: { importId, fileName, fileSha256: row.file_sha256, format: row.format, encryption: row.encryption, code: err.code, problems: problemCount, ...(who.reason === undefined ? {} : { reason: who.reason }) },
      });
    });
    throw err;
  };

  const { hardwareTokens: cfg } = gw.config;
  // Through the gateway's HTTP API the tokens end up in the gateway's own (small, see
  // runtime.heap) heap until they are stored, so an upload holds at most maxUploadTokens;
  // larger files go through `stepgate tokens import`, a process of its own.
  const uploadLimited = input.source === 'api' && cfg.import.maxUploadTokens < cfg.import.maxTokens;
  // Loaded on first use: every CLI command and `serve` start would otherwise load the
  // reader's modules for nothing. Inside the gateway (uploads) the file is read in a child
  // process with a heap of its own: its text and XML tree (several times the file's size)
  // never enter the gateway's small heap, and the memory goes back to the system when the
  // child exits. `stepgate tokens import` is a process of its own already: it reads inline.
  const readerOptions = {
    format: input.format,
    password: input.password,
    psk: input.psk,
    now,
    maxBytes: cfg.import.maxBytes,
    maxTokens: uploadLimited ? cfg.import.maxUploadTokens : cfg.import.maxTokens,
    maxPbkdf2Iterations: cfg.import.maxPbkdf2Iterations,
  };
  let file: TokenFile;
  try {
    if (input.source === 'api') {
      const { readTokenFileInChild } = await import('../pskc/read-token-file-in-child.ts');
      file = await readTokenFileInChild(input.data, readerOptions);
    } else {
      const { readTokenFile } = await import('../pskc/index.ts');
      file = readTokenFile(input.data, readerOptions);
    }
  } catch (err) {
    if (isAppError(err)) {
      if (uploadLimited && err.code === 'token_file_too_large') {
        return fail(new AppError('token_file_too_large', { detail: `${err.detail ?? err.title} Uploads hold at most ${cfg.import.maxUploadTokens} tokens (hardwareTokens.import.maxUploadTokens); import larger files on the gateway host with \`stepgate tokens import FILE\` (up to ${cfg.import.maxTokens}).` }), {}, 0);
      }
      return fail(err, {}, 0);
    }
    throw err;
  }
  const wipe = () => {
    for (const t of file.tokens) t.seed.fill(0);
  };

  try {
    const problems = [...file.problems];
    if (file.tokens.length === 0 && problems.length === 0) {
      return await fail(new AppError('token_file_invalid', { detail: 'The file holds no tokens.', invalidParams: [{ pointer: '', reason: 'no tokens' }] }), file, 0);
    }
    const taken = await existingSerials(gw, file.tokens);
    for (const t of file.tokens) {
      if (taken.has(t.serial)) problems.push({ index: t.index, serial: t.serial, code: 'duplicate_serial', reason: 'the serial is already in the inventory' });
    }
    if (problems.length > 0) {
      problems.sort((a, b) => a.index - b.index);
      return await fail(rejected(problems, file.tokens.length + file.problems.length), file, problems.length);
    }

    const nowMs = now.getTime();
    const rows: HardwareTokensTable[] = file.tokens.map((t) => {
      const id = newId('hwt');
      return {
        id,
        serial: t.serial,
        manufacturer: t.manufacturer,
        model: t.model,
        kind: t.kind,
        algorithm: t.algorithm,
        digits: t.digits,
        period_seconds: t.periodSeconds,
        challenge_length: t.challengeLength,
        seed_sealed: gw.sealer.seal(t.seed, tokenSeedAad(id)),
        counter: t.counter,
        drift_steps: t.driftSteps,
        state: 'unassigned',
        user_id: null,
        factor_id: null,
        valid_from: t.validFrom?.getTime() ?? null,
        valid_until: t.validUntil?.getTime() ?? null,
        import_id: importId,
        bind_failures: 0,
        resync_failures: 0,
        resync_locked_until: null,
        assign_failures: 0,
        assign_locked_until: null,
        created_at: nowMs,
        updated_at: nowMs,
        assigned_at: null,
      };
    });
    wipe();

    const counts: Record<string, number> = {};
    for (const r of rows) {
      const k = `${r.kind}_${r.algorithm.toLowerCase()}`;
      counts[k] = (counts[k] ?? 0) + 1;
    }
    const done: HardwareTokenImportsTable = { ...base, format: file.format, encryption: file.encryption, status: 'completed', token_count: rows.length };
    try {
      await gw.store.db.transaction().execute(async (tx) => {
        await tx.insertInto('hardware_token_imports').values(done).execute();
        for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
          await tx.insertInto('hardware_tokens').values(rows.slice(i, i + INSERT_CHUNK)).execute();
        }
        // Last, so the audit chain's head is locked only briefly.
        await gw.audit.append(tx, {
          ...audit,
          type: 'hardware_token.imported',
          data: { importId, fileName, fileSha256: done.file_sha256, format: done.format, encryption: done.encryption, tokens: rows.length, counts, ...(who.reason === undefined ? {} : { reason: who.reason }) },
        });
      });
    } catch (err) {
      // Another import added one of these serials between our check and our insert.
      if (isUniqueViolation(err)) {
        return await fail(new AppError('token_import_rejected', { detail: 'Another import added some of these serials at the same time; nothing was imported. Retry to see which.' }), file, 0);
      }
      throw err;
    }
    gw.logger.info({ importId, tokens: rows.length, format: done.format, encryption: done.encryption }, 'hardware tokens imported');
    return toImportView(done);
  } finally {
    wipe();
  }
}

export async function listImports(gw: Gateway, page: { limit: number; offset: number }): Promise<{ imports: ImportView[]; hasMore: boolean }> {
  const rows = await gw.store.db
    .selectFrom('hardware_token_imports')
    .selectAll()
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(page.limit + 1)
    .offset(page.offset)
    .execute();
  return { imports: rows.slice(0, page.limit).map(toImportView), hasMore: rows.length > page.limit };
}

export async function getImport(gw: Gateway, id: string): Promise<ImportView> {
  const row = await gw.store.db.selectFrom('hardware_token_imports').selectAll().where('id', '=', id).executeTakeFirst();
  if (row === undefined) throw new AppError('not_found', { detail: 'No such import.' });
  return toImportView(row);
}

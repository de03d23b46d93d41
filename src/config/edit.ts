// Edits of the config file by the admin CLI. The file stays as the admin wrote it: yaml's
// Document API changes only the nodes an edit touches, so comments, key order, quoting and
// blank lines survive. Every edit is validated as the relay would load it before anything is
// written; the write is atomic (temp file, fsync, rename, fsync of the folder) and the previous
// version is kept as <file>.bak.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, type Document, YAMLMap, YAMLSeq } from 'yaml';
import { ConfigError, parseConfigText, yamlProblem, type Config } from './load.js';
import { fsyncDir } from '../spool/fsync.js';

/** An edit the file cannot take: nothing was written. */
export class ConfigEditError extends Error {
  constructor(
    message: string,
    readonly problems: string[] = [],
  ) {
    super(problems.length ? `${message}\n${problems.map((p) => `  - ${p}`).join('\n')}` : message);
    this.name = 'ConfigEditError';
  }
}

/** Changes the document in place; may return notes for the admin. Throw ConfigEditError to refuse. */
export type DocumentEdit = (doc: Document.Parsed) => string[] | void;

export interface EditedText {
  text: string;
  /** The config as the relay will load it. */
  config: Config;
  notes: string[];
}

const TO_STRING = { flowCollectionPadding: false, lineWidth: 0 } as const;

/** The header of a config file the CLI creates. */
export const NEW_FILE_HEADER =
  ' smarthost config, created by the smarthost CLI.\n' +
  ' See deploy/smarthost.example.yml or the README for every key.';

/**
 * Applies an edit to the text of a config file and validates the result. Pure: no I/O besides
 * what the config itself needs (passFile). `env` as the relay would see it.
 */
export function applyEdit(
  before: string,
  edit: DocumentEdit,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): EditedText {
  const doc = parseDocument(before, { keepSourceTokens: false });
  if (doc.errors.length) {
    throw new ConfigEditError(`${file} is not valid YAML; fix it by hand first`, [
      yamlProblem(doc.errors[0]!),
    ]);
  }
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) {
    doc.contents = doc.createNode({}) as never;
    if (!before.trim()) doc.commentBefore = NEW_FILE_HEADER;
  }
  if (!isMap(doc.contents)) {
    throw new ConfigEditError(`${file} must hold a YAML mapping of keys (hostname:, listen:, …)`);
  }
  const notes = edit(doc) ?? [];
  const text = doc.toString(TO_STRING);
  try {
    return { text, config: parseConfigText(text, file, env), notes };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const old = problemsOf(before, file, env);
    if (old.length) {
      throw new ConfigEditError(
        `refused: ${file} is not valid even before this edit; fix it first (smarthost check-config)`,
        old,
      );
    }
    throw new ConfigEditError('refused: the config would not be valid after this edit', err.problems);
  }
}

function problemsOf(text: string, file: string, env: NodeJS.ProcessEnv): string[] {
  try {
    parseConfigText(text, file, env);
    return [];
  } catch (err) {
    return err instanceof ConfigError ? err.problems : [String(err)];
  }
}

export interface EditResult extends EditedText {
  file: string;
  /** The file did not exist and was created. */
  created: boolean;
  /** Where the previous version was kept. */
  backup?: string;
}

/** Reads the file (empty when missing), applies and validates the edit, writes it atomically. */
export async function editConfigFile(
  file: string,
  edit: DocumentEdit,
  env: NodeJS.ProcessEnv = process.env,
): Promise<EditResult> {
  let before = '';
  let created = false;
  try {
    before = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfigEditError(`cannot read ${file}: ${(err as Error).message}`);
    }
    created = true;
  }
  const edited = applyEdit(before, edit, file, env);
  const backup = await writeFileAtomic(file, edited.text, { backup: !created });
  return { ...edited, file, created, backup };
}

/**
 * Writes `text` to `file` so that a reader sees either the old or the new file, never half of
 * one, and the new one survives a crash once this resolves. The old file is copied to
 * <file>.bak first. A new file is owner-only (it may hold password hashes and secrets); an
 * existing one keeps its mode and, when we may, its owner.
 */
export async function writeFileAtomic(
  file: string,
  text: string,
  options: { backup: boolean },
): Promise<string | undefined> {
  const dir = path.dirname(file);
  const previous = await fs.stat(file).catch(() => undefined);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const handle = await fs.open(tmp, 'wx', previous ? previous.mode & 0o7777 : 0o600);
  try {
    await handle.writeFile(text, 'utf8');
    if (previous) {
      await handle.chmod(previous.mode & 0o7777);
      await handle.chown(previous.uid, previous.gid).catch(() => undefined);
    }
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.unlink(tmp).catch(() => undefined);
    throw err;
  }
  await handle.close();
  let backup: string | undefined;
  try {
    if (options.backup && previous) {
      backup = `${file}.bak`;
      await fs.copyFile(file, backup);
      await fs.chmod(backup, previous.mode & 0o7777);
    }
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.unlink(tmp).catch(() => undefined);
    throw err;
  }
  // Some file systems cannot fsync a folder; the rename is still atomic.
  await fsyncDir(dir).catch(() => undefined);
  return backup;
}

// --- helpers for edits ---------------------------------------------------------------------------

/** The sequence under `key`, created (block style) when absent; `seed` fills a new one. */
export function ensureSeq(doc: Document, key: string, seed: unknown[] = []): YAMLSeq {
  const node = doc.get(key, true);
  if (isSeq(node)) {
    if (node.items.length === 0) node.flow = false;
    return node;
  }
  if (node !== undefined && !(isScalar(node) && node.value === null)) {
    throw new ConfigEditError(`"${key}:" in the config is not a list; fix it by hand first`);
  }
  const seq = doc.createNode(seed) as YAMLSeq;
  seq.flow = false;
  doc.set(key, seq);
  return seq;
}

/** The maps of a sequence, with their index, whatever else it holds. */
export function seqMaps(seq: YAMLSeq | undefined): { index: number; map: YAMLMap }[] {
  if (!seq) return [];
  return seq.items.flatMap((item, index) => (isMap(item) ? [{ index, map: item as YAMLMap }] : []));
}

export function getSeq(doc: Document, key: string): YAMLSeq | undefined {
  const node = doc.get(key, true);
  return isSeq(node) ? node : undefined;
}

export function stringAt(map: YAMLMap, key: string): string | undefined {
  const value = map.get(key);
  return typeof value === 'string'
    ? value
    : value === undefined || value === null
      ? undefined
      : String(value);
}

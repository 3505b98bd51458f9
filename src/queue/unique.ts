import { createHash } from 'node:crypto';
import { InvalidJobError } from '../errors.js';
import type { JobDefinition } from '../job.js';

/** How a dispatch names its unique key: a key, a function of the payload, or `false` to dispatch without one. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type UniqueOption = string | false | ((payload: any) => string);

const MAX_KEY_LENGTH = 191;

/**
 * The `unique_key` a row is stored with, or null. Keys are scoped by job name (two job types may
 * use the same key), and a key too long for the column is stored as its SHA-256.
 */
export function uniqueKeyFor(job: JobDefinition | string, payload: unknown, option: UniqueOption | undefined): string | null {
  const name = typeof job === 'string' ? job : job.name;
  const source = option !== undefined ? option : typeof job === 'string' ? undefined : job.unique?.bind(job);
  if (source === undefined || source === false) return null;
  const key = typeof source === 'function' ? source(payload) : source;
  if (typeof key !== 'string' || key.length === 0) throw new InvalidJobError(`unique key for job '${name}' must be a non-empty string, got ${JSON.stringify(key)}`);
  const scoped = `${name}:${key}`;
  return scoped.length <= MAX_KEY_LENGTH ? scoped : `${name.slice(0, 100)}:sha256:${createHash('sha256').update(key).digest('hex')}`;
}

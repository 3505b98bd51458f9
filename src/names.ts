/**
 * Queue and job names: stored in 191-character columns and printed in tables and logs. Letters (any
 * script) and digits, with `.` `_` `-` `:` `/` after the first character. Quotes, spaces, `*`
 * (every queue, for pause and restart), control and invisible characters are refused: none is
 * needed in a name, and each can fool a terminal, a log reader or a shell script.
 */
export const NAME_MAX_LENGTH = 191;
const NAME = /^[\p{L}\p{N}][\p{L}\p{N}._:/-]*$/u;

/** Why `value` is not a usable queue or job name, or undefined if it is. */
export function nameProblem(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return 'must not be empty';
  if (value.length > NAME_MAX_LENGTH) return `is ${value.length} characters long (at most ${NAME_MAX_LENGTH})`;
  if (!NAME.test(value)) return 'may hold letters, digits and . _ - : / only, starting with a letter or digit';
  return undefined;
}

/** A user's value quoted for a one-line message: shortened, with control and invisible characters escaped. */
export function quoteValue(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  const short = text.length > 60 ? `${text.slice(0, 60)}…` : text;
  return `'${short.replace(/[\p{C}\p{Z}]/gu, (char) => (char === ' ' ? ' ' : `\\u{${char.codePointAt(0)!.toString(16)}}`))}'`;
}

/** Throws `error(message)` when `value` is not a usable name: `queue 'a;b' may hold letters, …`. */
export function assertName(kind: string, value: unknown, error: (message: string) => Error): void {
  const problem = nameProblem(value);
  if (problem) throw error(`${kind} ${quoteValue(value)} ${problem}`);
}

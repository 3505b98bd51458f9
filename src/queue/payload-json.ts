/**
 * Why a payload cannot be stored as JSON as it is, or undefined when it can, e.g.
 * "size: a BigInt cannot be stored as JSON" (the field's path, then the reason).
 *
 * Payloads are stored with JSON.stringify, which throws on some values (a BigInt, a circular
 * structure) and silently changes others: NaN and ±Infinity become null, functions and symbols
 * vanish from objects, undefined in an array becomes null, a Map or Set becomes {}. A handler would
 * then run on other data than was dispatched, so those are refused too, before anything is written.
 *
 * Allowed on purpose: a value with toJSON is checked as what toJSON returns, since that is what is
 * stored (a Date arrives as its ISO string); an object field that is undefined is stored as absent,
 * which a handler reads the same way (optional fields of a schema are often undefined).
 */
export function jsonProblem(payload: unknown): string | undefined {
  let problem: Problem | undefined;
  try {
    problem = problemIn(payload, '', []);
  } catch (error) {
    // A getter or toJSON deeper down threw while being read, or the nesting outgrew the stack.
    return `cannot be encoded as JSON: ${(error as Error)?.message ?? String(error)}`;
  }
  if (!problem) return undefined;
  return problem.path.length > 0 ? `${problem.path.join('.')}: ${problem.reason}` : problem.reason;
}

/** The path is built as the walk unwinds, only for the value at fault: nothing is allocated per value that is fine. */
interface Problem {
  path: string[];
  reason: string;
}

function problemIn(value: unknown, key: string, ancestors: object[]): Problem | undefined {
  let stored = value;
  if (hasToJSON(value)) {
    try {
      stored = value.toJSON(key);
    } catch (error) {
      return { path: [], reason: `toJSON() failed: ${(error as Error)?.message ?? String(error)}` };
    }
  }
  switch (typeof stored) {
    case 'bigint':
      return { path: [], reason: 'a BigInt cannot be stored as JSON (pass it as a string or a number)' };
    case 'function':
      return { path: [], reason: 'a function cannot be stored as JSON' };
    case 'symbol':
      return { path: [], reason: 'a symbol cannot be stored as JSON' };
    case 'number':
      return Number.isFinite(stored) ? undefined : { path: [], reason: `${stored} would be stored as null` };
    case 'object':
      return stored === null ? undefined : problemInObject(stored, ancestors);
    default:
      return undefined;
  }
}

function problemInObject(object: object, ancestors: object[]): Problem | undefined {
  if (object instanceof Map || object instanceof Set) {
    return { path: [], reason: `a ${object instanceof Map ? 'Map' : 'Set'} would be stored as {} (pass an object or an array)` };
  }
  // Only a cycle breaks JSON; the same object twice in different branches is stored twice, as JSON.stringify does.
  if (ancestors.includes(object)) return { path: [], reason: 'refers back to an object that contains it (a circular structure cannot be stored as JSON)' };
  ancestors.push(object);
  try {
    if (Array.isArray(object)) {
      for (let index = 0; index < object.length; index++) {
        const item: unknown = object[index];
        const problem = item === undefined ? { path: [], reason: 'undefined in an array would be stored as null' } : problemIn(item, String(index), ancestors);
        if (problem) return { path: [String(index), ...problem.path], reason: problem.reason };
      }
      return undefined;
    }
    for (const key of Object.keys(object)) {
      const item: unknown = (object as Record<string, unknown>)[key];
      if (item === undefined) continue;
      const problem = problemIn(item, key, ancestors);
      if (problem) return { path: [key, ...problem.path], reason: problem.reason };
    }
    return undefined;
  } finally {
    ancestors.pop();
  }
}

function hasToJSON(value: unknown): value is { toJSON(key: string): unknown } {
  return typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function';
}

/**
 * Payloads are stored as JSON. A payload JSON cannot encode (a BigInt, a circular structure) or
 * would silently change (NaN and Infinity become null, functions and symbols vanish, a Map becomes
 * {}) is rejected like one that fails its schema: an InvalidJobError naming the payload's index and
 * the field, before a row is written, from dispatch, dispatchMany and batch alike.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseJsonColumn } from '../src/db/json.js';
import { InvalidJobError } from '../src/errors.js';
import { defineJob } from '../src/job.js';
import type { Mailq } from '../src/mailq.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { count, openQueue } from './support/queue.js';

/** No schema: the payload goes to the database as given. */
const loose = defineJob({ name: 'loose', handle: () => undefined });
/** A schema that lets unknown fields through: the JSON check runs on what the schema returns. */
const open = defineJob({ name: 'open', schema: z.object({ n: z.number() }).passthrough(), handle: () => undefined });

let db: TestDatabase;
let mq: Mailq;

beforeAll(async () => {
  db = await createTestDatabase('unencodable-payloads');
  mq = openQueue(db.url, { jobs: [loose, open] });
  await mq.migrate();
});

afterAll(async () => {
  await mq?.close();
  await db?.drop();
});

beforeEach(async () => {
  await mq.knex(mq.tables.jobs).delete();
  await mq.knex(mq.tables.jobBatches).delete();
});

function circular(): Record<string, unknown> {
  const node: Record<string, unknown> = { n: 1, child: { name: 'c' } };
  (node.child as Record<string, unknown>).parent = node;
  return node;
}

type Bad = [string, () => unknown, RegExp];

/** Payloads that are no object at all: a schema of an object refuses them itself. [what, payload, the reason the error gives]. */
const NOT_AN_OBJECT: Bad[] = [
  ['undefined', () => undefined, /: payload is undefined$/],
  ['a function', () => () => 1, /: a function cannot be stored as JSON/],
];

/** Objects holding a value JSON cannot store faithfully: the reason follows the field's path. */
const HOLDING: Bad[] = [
  ['a BigInt', () => ({ n: 1, size: 10n }), /: size: a BigInt cannot be stored as JSON/],
  // (A schema returns a copy of the outer object: there the cycle closes one step later, at child.parent.child.)
  ['a circular structure', circular, /: child\.parent(\.child)?: refers back to an object that contains it/],
  ['a method', () => ({ n: 1, callback() {} }), /: callback: a function cannot be stored as JSON/],
  ['a symbol', () => ({ n: 1, tag: Symbol('t') }), /: tag: a symbol cannot be stored as JSON/],
  ['NaN', () => ({ n: 1, ratio: Number.NaN }), /: ratio: NaN would be stored as null/],
  ['Infinity', () => ({ n: 1, limits: [1, Number.POSITIVE_INFINITY] }), /: limits\.1: Infinity would be stored as null/],
  ['undefined in an array', () => ({ n: 1, list: [1, undefined] }), /: list\.1: undefined in an array would be stored as null/],
  ['a Map', () => ({ n: 1, index: new Map([['a', 1]]) }), /: index: a Map would be stored as \{\}/],
  ['a toJSON that throws', () => ({ n: 1, when: { toJSON: () => { throw new Error('no clock'); } } }), /: when: toJSON\(\) failed: no clock/],
];

const K = 2;
const GOOD = [{ n: 0 }, { n: 1 }, { n: 3 }];
function withBadAt(bad: unknown): unknown[] {
  return [...GOOD.slice(0, K), bad, ...GOOD.slice(K)];
}

async function expectInvalid(call: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await call.then(() => undefined, (rejected: unknown) => rejected);
  expect(error).toBeInstanceOf(InvalidJobError);
  expect((error as Error).message).toMatch(message);
  expect(await count(mq.knex, mq.tables.jobs)).toBe(0);
  expect(await count(mq.knex, mq.tables.jobBatches)).toBe(0);
}

describe.each([
  ['no schema', loose, [...NOT_AN_OBJECT, ...HOLDING]],
  ['a schema that passes unknown fields', open, HOLDING],
] as const)('a payload JSON cannot store faithfully (%s)', (_, job, BAD) => {
  it.each(BAD)('%s: dispatch rejects it and writes nothing', async (_what, bad, reason) => {
    await expectInvalid(mq.dispatch(job, bad() as never), new RegExp(`^invalid payload for job '${job.name}': ${reason.source.slice(2)}`));
  });

  it.each(BAD)(`%s at index ${K}: dispatchMany names the index and writes nothing`, async (_what, bad, reason) => {
    await expectInvalid(mq.dispatchMany(job, withBadAt(bad()) as never[]), new RegExp(`^invalid payload for job '${job.name}' at index ${K}${reason.source}`));
  });

  it.each(BAD)(`%s at index ${K}: batch names the index and writes nothing`, async (_what, bad, reason) => {
    const entries = withBadAt(bad()).map((payload) => ({ job, payload }));
    await expectInvalid(mq.batch(entries as never), new RegExp(`^invalid payload for job '${job.name}' at index ${K}${reason.source}`));
  });
});

describe('what JSON stores as something else, by design', () => {
  it('a Date is stored as its ISO string, and an undefined field as absent', async () => {
    const at = new Date('2026-03-01T12:00:00.000Z');
    const { id } = await mq.dispatch(loose, { n: 1, at, note: undefined });
    const row = await mq.knex(mq.tables.jobs).where({ id }).first();
    expect(parseJsonColumn(row.payload)).toEqual({ n: 1, at: '2026-03-01T12:00:00.000Z' });
  });
});

describe("a payload over the server's max_allowed_packet", () => {
  let packet = 0;
  // The server closes the connection after refusing the packet: each call gets a queue (and pool) of its own,
  // so whether a pool notices a closed connection in time (not this suite's subject) cannot affect the rest.
  let sender: Mailq;
  beforeAll(async () => {
    const [[row]] = (await mq.knex.raw('SELECT @@max_allowed_packet AS packet')) as [[{ packet: number | string }]];
    packet = Number(row.packet);
  });
  beforeEach(() => {
    sender = openQueue(db.url, { jobs: [loose] });
  });
  afterEach(async () => {
    await sender.close();
  });
  const huge = () => ({ n: 2, blob: 'x'.repeat(packet + 1024) });

  it('dispatch: an InvalidJobError that says it is too large, nothing written', async () => {
    await expectInvalid(sender.dispatch(loose, huge()), /^invalid payload for job 'loose': too large: its row is bigger than the server's max_allowed_packet/);
  });

  it(`dispatchMany: the same, naming index ${K}`, async () => {
    await expectInvalid(sender.dispatchMany(loose, withBadAt(huge())), new RegExp(`^invalid payload for job 'loose' at index ${K}: too large: its row is bigger than the server's max_allowed_packet`));
  });
});

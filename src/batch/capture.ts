import { AsyncLocalStorage } from 'node:async_hooks';

const created = new AsyncLocalStorage<string[]>();

/**
 * Runs `work` and collects the ids of the batches it creates, however deep in its call chain (the
 * scheduler learns which batch a command like `sync-mailbox --queue` started, for withoutOverlapping).
 *
 * @example
 * const { batchIds } = await captureBatches(() => mq.batch(sendEmail, users));
 */
export async function captureBatches<T>(work: () => Promise<T>): Promise<{ result: T; batchIds: string[] }> {
  const batchIds: string[] = [];
  const result = await created.run(batchIds, work);
  return { result, batchIds };
}

export function noteBatchCreated(id: string): void {
  created.getStore()?.push(id);
}

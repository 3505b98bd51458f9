import cliProgress from 'cli-progress';
import type { Output } from './output.js';

/** Long work's progress: a bar on a terminal, a plain line now and then elsewhere (CI logs, pipes). */
export interface Progress {
  update(done: number, detail?: string): void;
  stop(): void;
}

const PLAIN_EVERY_MS = 5_000;
const PLAIN_STEPS = 10;

export function createProgress(output: Output, label: string, total: number): Progress {
  return output.isTTY && process.stderr.isTTY ? barProgress(label, total) : plainProgress(output, label, total);
}

function barProgress(label: string, total: number): Progress {
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% | {value}/{total} | {detail} | {duration_formatted}`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { detail: '' });
  return {
    update: (done, detail = '') => bar.update(done, { detail }),
    stop: () => bar.stop(),
  };
}

/** A line at every tenth of the way and at least every few seconds, never two identical ones. */
function plainProgress(output: Output, label: string, total: number): Progress {
  let lastStep = -1;
  let lastAt = Date.now();
  let lastLine = '';
  let latest = { done: 0, detail: '' };
  const print = () => {
    const percent = total === 0 ? 100 : Math.floor((latest.done / total) * 100);
    const line = `${label}: ${latest.done}/${total} (${percent}%)${latest.detail ? ` ${latest.detail}` : ''}`;
    if (line === lastLine) return;
    output.err(line);
    lastLine = line;
    lastAt = Date.now();
  };
  return {
    update(done, detail = '') {
      latest = { done, detail };
      const step = total === 0 ? PLAIN_STEPS : Math.floor((done / total) * PLAIN_STEPS);
      if (step > lastStep || Date.now() - lastAt >= PLAIN_EVERY_MS) {
        lastStep = Math.max(step, lastStep);
        print();
      }
    },
    stop: print,
  };
}

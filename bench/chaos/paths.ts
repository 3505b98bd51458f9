import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, whether this runs from bench/chaos (tsx, vitest) or dist/bench/chaos (compiled). */
function repositoryRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('chaos: cannot find the repository root (no package.json above this file)');
    dir = parent;
  }
  return dir;
}

export const REPO_ROOT = repositoryRoot();
export const MAILQ_BIN = path.join(REPO_ROOT, 'bin', 'mailq.js');
/** Worker processes load compiled JS: `npm run build` first (npm run chaos does). */
export const WORKER_CONFIG = path.join(REPO_ROOT, 'dist', 'bench', 'chaos', 'worker-config.js');
export const DEFAULT_RESULTS_FILE = path.join(REPO_ROOT, 'bench', 'chaos-results.json');
export const DEFAULT_LOG_FILE = path.join(REPO_ROOT, 'bench', 'chaos-workers.log');
